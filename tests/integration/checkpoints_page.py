"""The Checkpoints page and its API, checked in the browser test's running Airflow.

Called by ``test_ui_browser.py`` once a real checkpoint and a real recovery have run, so the page
shows real data. It asserts:

* the plugin is registered with the api-server, with its navigation entry;
* requests without a token, or with a forged one, are refused (401 / 403), pages and API alike;
* the list shows the checkpoint with its LKG badge, the storage chart and the recorded restore;
  the detail view shows the manifest, the fingerprints per store and the restores that used it;
* "Restore…" on the detail page, confirmed with the id, starts a ``restore_checkpoint`` dry run
  that succeeds, and the browser lands on that run's page; "Verify now" starts a
  ``checkpoint_verify`` run of that checkpoint only, which succeeds;
* the JSON API lists and shows checkpoints, a restore without the right ``confirm`` starts
  nothing, and ``POST /api/checkpoints/database`` starts a checkpoint run that succeeds;
* the rollback copies the recovery left in the live stores are listed, as JSON and on their page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

PAGE = "/checkpoints"


def _token(airflow: Any) -> str:
    resp = httpx.post(f"{airflow.url}/auth/token", json={"username": "admin", "password": airflow.password})
    resp.raise_for_status()
    return resp.json()["access_token"]


def check_checkpoints_page(
    driver: Any,
    airflow: Any,
    cid: str,
    *,
    shot: Callable[[Any, str], Any],
    finish: Callable[[dict[str, Any]], dict[str, Any]],
    wait: Callable[..., Any],
) -> None:
    from selenium.webdriver.common.by import By

    url = airflow.url + PAGE
    # registered, with its navigation entry
    plugins = {p["name"]: p for p in airflow.api("GET", "/plugins")["plugins"]}
    assert "checkpoints" in plugins, plugins.keys()
    assert [v["href"] for v in plugins["checkpoints"]["external_views"]] == [f"{PAGE}/ui/"]

    # 1. nobody without a valid token gets anything
    for path in ("/ui/", f"/ui/{cid}", "/api/checkpoints", f"/api/checkpoints/{cid}", "/api/lkg", "/api/rollbacks"):
        assert httpx.get(url + path).status_code == 401, path
        assert httpx.get(url + path, headers={"Authorization": "Bearer forged.token.value"}).status_code in (401, 403)
    assert httpx.post(url + "/api/checkpoints/database", json={}).status_code == 401
    assert httpx.post(url + f"/api/restore/{cid}", json={"confirm": cid}).status_code == 401

    # 2. the JSON API, as an authenticated user
    auth = {"Authorization": f"Bearer {_token(airflow)}"}
    listed = httpx.get(url + "/api/checkpoints", headers=auth).json()
    mine = [c for c in listed["checkpoints"] if c["checkpoint_id"] == cid]
    assert mine and mine[0]["lkg"] and listed["lkg"]["checkpoint_id"] == cid
    assert set(mine[0]["stores"]) == {"postgres", "redis", "search"}
    detail = httpx.get(url + f"/api/checkpoints/{cid}", headers=auth).json()
    assert set(detail["fingerprints"]) == {"postgres", "redis", "search"} and detail["restores"]
    assert httpx.get(url + "/api/checkpoints/ckpt-20000101T000000Z-000000", headers=auth).status_code == 404
    assert httpx.get(url + "/api/checkpoints", params={"type": "nope"}, headers=auth).status_code == 400
    assert httpx.get(url + "/api/lkg", headers=auth).json()["lkg"]["checkpoint_id"] == cid
    runs_before = airflow.api("GET", "/dags/restore_checkpoint/dagRuns")["total_entries"]
    refused = httpx.post(url + f"/api/restore/{cid}", json={"confirm": cid[:-1]}, headers=auth)
    assert refused.status_code == 400 and "confirm must repeat" in refused.text
    assert airflow.api("GET", "/dags/restore_checkpoint/dagRuns")["total_entries"] == runs_before
    assert "/api/restore/{checkpoint_id}" in httpx.get(url + "/openapi.json").json()["paths"]

    # 3. the pages, in the browser that logged in to the Airflow UI (its session cookie)
    driver.get(f"{url}/ui/")
    wait(driver).until(lambda d: d.find_elements(By.ID, "checkpoints"))
    row = driver.find_element(By.CSS_SELECTOR, f"tr.checkpoint[data-id='{cid}']")
    assert "LKG" in row.text and "scheduled" in row.text and "verified" in row.text
    assert driver.find_elements(By.CSS_SELECTOR, "#storage-chart rect.day")
    assert cid in driver.find_element(By.ID, "restores").text  # the recovery that used it
    shot(driver, "checkpoints-list")
    row.find_element(By.TAG_NAME, "a").click()
    wait(driver).until(lambda d: d.find_elements(By.ID, "fingerprints"))
    prints = driver.find_element(By.ID, "fingerprints").text
    assert "orders" in prints and "keys" in prints and "docs=" in prints, prints[:2000]
    shot(driver, "checkpoints-detail")

    # 4. "Restore…", confirmed with the id: a dry run of restore_checkpoint, and its run page
    driver.find_element(By.ID, "restore-button").click()
    driver.find_element(By.ID, "restore-confirm").send_keys(cid)
    driver.find_element(By.ID, "restore-submit").click()
    wait(driver).until(lambda d: "/dags/restore_checkpoint/runs/" in d.current_url)
    run_id = driver.current_url.rsplit("/runs/", 1)[1].split("?")[0].split("/")[0]
    run = finish({"dag_id": "restore_checkpoint", "dag_run_id": run_id})
    assert run["state"] == "success" and run["conf"]["dry_run"] is True and run["conf"]["checkpoint_id"] == cid

    # 4b. "Verify now" at the basic level: checkpoint_verify for this checkpoint only, and its run page
    driver.get(f"{url}/ui/{cid}")
    wait(driver).until(lambda d: d.find_elements(By.ID, "verify-button"))
    driver.find_element(By.CSS_SELECTOR, "#verify-level option[value='basic']").click()
    driver.find_element(By.ID, "verify-button").click()
    wait(driver).until(lambda d: "/dags/checkpoint_verify/runs/" in d.current_url)
    run_id = driver.current_url.rsplit("/runs/", 1)[1].split("?")[0].split("/")[0]
    run = finish({"dag_id": "checkpoint_verify", "dag_run_id": run_id})
    assert run["state"] == "success" and run["conf"] == {"checkpoint_id": cid, "level": "basic"}
    report = airflow.xcom("checkpoint_verify", run_id, "verify")
    assert [(r["checkpoint_id"], r["level"]) for r in report["verified"]] == [(cid, "basic")]

    # 4c. the rollback copies the recovery kept (rollback_keep: the newest of each database, db, index)
    rollbacks = httpx.get(url + "/api/rollbacks", headers=auth, timeout=60).json()
    kept = {c["component"] for c in rollbacks["rollbacks"]}
    assert "postgres" in kept, rollbacks
    assert {p["component"] for p in rollbacks["problems"]} <= {"files"}, rollbacks["problems"]  # no files connection
    driver.get(f"{url}/ui/rollbacks")
    wait(driver).until(lambda d: d.find_elements(By.ID, "rollbacks"))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#rollbacks tr.rollback")) == len(rollbacks["rollbacks"])
    shot(driver, "checkpoints-rollbacks")

    # 5. a checkpoint started through the API (Redis only: quick) runs and succeeds
    started = httpx.post(url + "/api/checkpoints/database", json={"conf": {"components": ["redis"]}}, headers=auth)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["dag_id"] == "checkpoint_scheduled"
    assert finish({"dag_id": "checkpoint_scheduled", "dag_run_id": body["dag_run_id"]})["state"] == "success"
