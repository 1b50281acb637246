"""The Airflow UI story in a real browser: every trigger form works with its defaults, and one
checkpoint -> damage -> one-click recovery cycle succeeds from the UI; then the Checkpoints page
and its API show them (``checkpoints_page.py``).

Airflow 3.3 runs for real (api-server, scheduler, dag-processor and triggerer, LocalExecutor,
a temporary AIRFLOW_HOME and store) with the shipped DAGs, against PostgreSQL, Redis and
OpenSearch servers of its own: the DAGs' defaults capture *every* database, Redis db and
index, so servers shared with other test modules would put their data (and their restores'
rollback copies) into this cycle. Headless Chromium, driven by Selenium, logs in, opens each
DAG's trigger form, and clicks Trigger. Screenshots of every form and of the finished runs
are saved under ``.local/test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".local" / "test-artifacts" / "ui"
sys.path.insert(0, str(REPO / "scripts"))
import sample_data  # noqa: E402

from tests.integration.airflow_support import Airflow, admin_password, airflow_env, free_port  # noqa: E402
from tests.integration.airflow_support import wait as _wait  # noqa: E402
from tests.integration.checkpoints_page import check_checkpoints_page  # noqa: E402

pytestmark = pytest.mark.integration

DAG_IDS = (
    "checkpoint_scheduled",
    "checkpoint_pre_migration",
    "checkpoint_pre_deploy",
    "example_migration_after_checkpoint",
    "recovery_lkg",
    "restore_checkpoint",
    "example_resumable_simulation",
)
CAPTURE_DAGS = ("checkpoint_scheduled", "checkpoint_pre_migration", "checkpoint_pre_deploy")
DB = "ui_app"
PREFIX = "ui-"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def servers(services_module, tmp_path_factory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("ui_services")
    try:
        yield services_module.start(state, only=["postgres", "redis", "opensearch"])
    finally:
        services_module.stop(state)


@pytest.fixture(scope="module")
def airflow(servers, services_module, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("ui_airflow_home")
    port = free_port()
    password, passwords = admin_password(home)
    env = airflow_env(
        home,
        services_module.connection_env(servers),
        port=port,
        password_file=passwords,
        dags_folder=REPO / "dags",
        extra={
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",  # restore_checkpoint re-reads its choices
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(Path(servers["opensearch"]["path_repo"]) / "ui"),
            "AIRFLOW__CHECKPOINT__TASK_RETRIES": "0",
            # Trigger's "unpause on trigger" unpauses checkpoint_scheduled; with catchup=False a
            # */30 schedule would then start a scheduled run at once (capturing the damaged data
            # and moving the LKG). February 29th is years away from the start date: no scheduled run.
            "AIRFLOW__CHECKPOINT__SCHEDULE": "0 0 29 2 *",
            # the REST API the restore DAGs pause the capture DAGs through
            "AIRFLOW_CONN_AIRFLOW_API": f"http://admin:{password}@127.0.0.1:{port}",
        },
    )
    af = Airflow(home, env, port, password, components=COMPONENTS, dag_ids=DAG_IDS)
    try:
        af.start()
        _wait("Airflow to be healthy with every shipped DAG parsed", af.ready, timeout=180)
        yield af
    except BaseException:
        print(af.logs())
        raise
    finally:
        af.stop()


@pytest.fixture(scope="module")
def browser(airflow, tmp_path_factory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,3400",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()  # ends chromedriver and the Chromium it started


def _shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _waiter(driver: Any, timeout: float = 60) -> Any:
    """Explicit waits that ride out page navigations (the SPA reloads while logging in)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=(WebDriverException,))


def _login(driver: Any, airflow: Airflow) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(airflow.url + "/")
    wait = _waiter(driver)
    password = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "input[type='password']")))
    driver.find_element(By.CSS_SELECTOR, "input:not([type='password'])").send_keys("admin")
    password.send_keys(airflow.password)
    _shot(driver, "login")
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait.until(lambda d: "login" not in d.current_url.lower() and d.find_elements(By.CSS_SELECTOR, "a[href$='/dags']"))


CHOICE = "//*[@id='element_checkpoint_id'][contains(normalize-space(), 'last-known-good (now')]//input"  # drop-down
OPEN_FORM = "//button[@aria-label='Trigger Dag']"  # the DAG page's button that opens the trigger form
TRIGGER = "(//button[normalize-space()='Trigger' and not(@aria-label)])[last()]"  # the form's own button


def _open_form(driver: Any, airflow: Airflow, dag_id: str) -> Any:
    """Open the trigger form of ``dag_id``; return its Trigger button once the form has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(f"{airflow.url}/dags/{dag_id}")
    wait = _waiter(driver)
    try:
        # the DAG page's Trigger button opens the trigger form
        wait.until(ec.element_to_be_clickable((By.XPATH, OPEN_FORM))).click()
        wait.until(ec.presence_of_element_located((By.XPATH, TRIGGER)))
        if dag_id != "example_migration_after_checkpoint":  # the only DAG without Params
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[id^='element_']")))
    except Exception:
        _shot(driver, f"timeout-{dag_id}")
        (ARTIFACTS / f"timeout-{dag_id}.html").write_text(driver.page_source)
        raise
    time.sleep(1.5)  # the form validates its fields once they are rendered
    return driver.find_element(By.XPATH, TRIGGER)


def _page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _trigger(driver: Any, airflow: Airflow, dag_id: str) -> dict[str, Any]:
    """Click Trigger on the form as it opens (the defaults); return the new run."""
    before = {r["dag_run_id"] for r in airflow.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]}
    _open_form(driver, airflow, dag_id).click()

    def new_run() -> dict[str, Any] | None:
        runs = [r for r in airflow.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"] if r["dag_run_id"] not in before]
        return runs[0] if runs else None

    return _wait(f"a new {dag_id} run", new_run, timeout=30, interval=1)


def _finish(driver: Any, airflow: Airflow, run: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    dag_id, run_id = run["dag_id"], run["dag_run_id"]

    def done() -> dict[str, Any] | None:
        current = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return current if current["state"] in ("success", "failed") else None

    finished = _wait(f"{dag_id} run {run_id} to finish", done, timeout=timeout, interval=3)
    tis = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    states = {t["task_id"]: t["state"] for t in tis}
    driver.get(f"{airflow.url}/dags/{dag_id}/runs/{run_id}")
    time.sleep(4)  # let the grid and the run's header render
    _shot(driver, f"run-{dag_id}")
    assert finished["state"] == "success", (states, airflow.logs())
    return {**finished, "tasks": states}


def _xcom(airflow: Airflow, dag_id: str, run_id: str, task_id: str) -> Any:
    value = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    return value["value"] if not isinstance(value["value"], str) else json.loads(value["value"])


def _state(servers: dict[str, Any], indices: list[str]) -> dict[str, Any]:
    return {
        "postgres": sample_data.state_postgres(servers["postgres"], DB),
        "redis": sample_data.state_redis(servers["redis"], dbs=range(2)),
        "search": sample_data.state_search(servers["opensearch"]["url"], indices),
    }


def _damage(servers: dict[str, Any], indices: list[str]) -> None:
    with sample_data.pg_connect(servers["postgres"], DB) as conn:
        conn.execute("DROP TABLE IF EXISTS attachments")
        conn.execute("DELETE FROM orders WHERE id % 3 = 0")
    r = sample_data.redis_client(servers["redis"])
    r.delete("hash:big", "stream:events")
    r.set("junk", "x")
    sample_data.redis_client(servers["redis"], 1).flushdb()
    httpx.delete(f"{servers['opensearch']['url']}/{indices[0]}").raise_for_status()


def test_every_trigger_form_is_enabled_with_its_defaults_and_one_click_recovery_works(servers, airflow, browser):
    from selenium.webdriver.common.by import By

    _login(browser, airflow)
    # 1. every form opens with its defaults and a Trigger button that is enabled
    for dag_id in DAG_IDS:
        button = _open_form(browser, airflow, dag_id)
        _shot(browser, f"form-{dag_id}")
        text = _page_text(browser)
        assert button.is_enabled() and button.get_attribute("disabled") is None, (dag_id, text[:2000])
        assert "This field is required" not in text, dag_id
    restore_form = _open_form(browser, airflow, "restore_checkpoint")
    assert "Components" in _page_text(browser) and restore_form.is_enabled()

    # 2. the application's state, then a checkpoint of it from the UI
    sample_data.seed_postgres(servers["postgres"], DB)
    sample_data.seed_redis(servers["redis"])
    indices = sample_data.seed_search(servers["opensearch"]["url"], prefix=PREFIX)
    original, seeded_at = _state(servers, indices), time.monotonic()
    checkpoint = _finish(browser, airflow, _trigger(browser, airflow, "checkpoint_scheduled"))
    assert checkpoint["tasks"]["checkpoint.bundle"] == "success"

    # the restore form now offers the new checkpoint, labelled and marked LKG (after the next parse)
    cid = _xcom(airflow, "checkpoint_scheduled", checkpoint["dag_run_id"], "checkpoint.bundle")["checkpoint_id"]

    def offered() -> bool:
        # a parse between the seal and the LKG mark lists the checkpoint without the mark: wait for both
        params = airflow.api("GET", "/dags/restore_checkpoint/details")["params"]
        return f"last-known-good (now {cid}" in json.dumps(params)

    _wait("restore_checkpoint to offer the new checkpoint as the LKG", offered, timeout=120, interval=3)
    _open_form(browser, airflow, "restore_checkpoint")
    try:
        _waiter(browser).until(lambda d: d.find_element(By.XPATH, CHOICE)).click()  # opens the option list
        _waiter(browser).until(lambda d: " · LKG" in _page_text(d))
    except Exception:
        _shot(browser, "timeout-restore_checkpoint-choices")
        (ARTIFACTS / "timeout-restore_checkpoint-choices.html").write_text(browser.page_source)
        raise
    time.sleep(1)
    _shot(browser, "form-restore_checkpoint-choices")
    text = _page_text(browser)
    assert f"last-known-good (now {cid} · " in text and f"{cid} · " in text and " · LKG" in text, text[:3000]
    assert "tags: scheduled" in text

    # 3. damage, then the one-click recovery from the UI
    _damage(servers, indices)
    assert _state(servers, indices) != original
    recovery = _finish(browser, airflow, _trigger(browser, airflow, "recovery_lkg"))
    assert recovery["tasks"] == {
        "drain": "success",
        "restore": "success",
        "health_check": "success",
        "resume": "success",
    }

    # 4. the data is back, exactly
    after = _state(servers, indices)
    assert after["postgres"] == original["postgres"] and after["search"] == original["search"]
    # keys keep their absolute expiry (RESTORE ABSTTL): remaining TTLs shrank by the time that passed
    elapsed_ms = int((time.monotonic() - seeded_at) * 1000)
    assert sample_data.same_redis_state(original["redis"], after["redis"], ttl_tolerance_ms=elapsed_ms + 30_000) == []

    # 5. the drain paused the unpaused capture DAG and resumed it; the others were paused all along
    paused = {d: airflow.api("GET", f"/dags/{d}")["is_paused"] for d in CAPTURE_DAGS}
    assert paused == {"checkpoint_scheduled": False, "checkpoint_pre_migration": True, "checkpoint_pre_deploy": True}
    assert _xcom(airflow, "recovery_lkg", recovery["dag_run_id"], "drain")["paused"] == ["checkpoint_scheduled"]

    # 6. the Checkpoints page and its API show this checkpoint and the recovery, and start runs
    check_checkpoints_page(
        browser, airflow, cid, shot=_shot, finish=lambda run: _finish(browser, airflow, run), wait=_waiter
    )
