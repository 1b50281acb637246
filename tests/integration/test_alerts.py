"""Failure alerts: a stale LKG fails checkpoint_verify and the SmtpNotifier of ``[checkpoint] notify_email``
delivers the alert to a real SMTP server on loopback (aiosmtpd), which the test reads."""

from __future__ import annotations

import email
import email.policy

import pytest
from aiosmtpd.controller import Controller

from airflow_checkpoint_provider.core import Store
from tests.integration.airflow_support import free_port
from tests.integration.conftest import run_dag
from tests.unit.core.helpers import make_checkpoint

pytestmark = pytest.mark.integration


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def _body(message) -> str:
    part = message.get_body(preferencelist=("html", "plain"))
    return part.get_content() if part is not None else ""


def test_an_lkg_older_than_lkg_max_age_fails_verify_and_mails_an_alert_naming_it(airflow_env, smtp, tmp_path):
    port, inbox = smtp
    store = Store.open(tmp_path / "store", create=True)
    lkg = make_checkpoint(store, run="stale").checkpoint_id
    store.mark_lkg(lkg)
    env = {
        "AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root,
        "AIRFLOW__CHECKPOINT__LKG_MAX_AGE": "1s",
        "AIRFLOW__CHECKPOINT__NOTIFY_EMAIL": "ops@example.com, dba@example.com",
        "AIRFLOW__CHECKPOINT__NOTIFY_FROM": "airflow@example.com",
        "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true",
    }
    result = run_dag(airflow_env, "checkpoint_verify", {"level": "basic", "sample": 0}, extra_env=env)
    assert result["state"] == "failed"
    assert result["tasks"]["verify"] == "success" and result["tasks"]["lkg_age"] == "failed"
    assert f"the last-known-good checkpoint {lkg} is " in result["log"]
    assert "older than [checkpoint] lkg_max_age 1s" in result["log"]
    [(rcpts, message)] = inbox.messages  # one alert: only lkg_age failed
    assert sorted(rcpts) == ["dba@example.com", "ops@example.com"]
    assert message["From"] == "airflow@example.com"
    assert "checkpoint_verify.lkg_age failed" in message["Subject"]
    body = _body(message)
    assert "checkpoint_verify" in body and "lkg_age" in body and result["run_id"] in body
    assert f"the last-known-good checkpoint {lkg} is " in body and "lkg_max_age 1s" in body
    assert store.lkg().checkpoint_id == lkg  # an alert, not a repair: the pointer stays


def test_a_fresh_lkg_passes_the_age_check_and_sends_nothing(airflow_env, smtp, tmp_path):
    port, inbox = smtp
    store = Store.open(tmp_path / "store", create=True)
    lkg = make_checkpoint(store, run="fresh").checkpoint_id
    store.mark_lkg(lkg)
    env = {
        "AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root,
        "AIRFLOW__CHECKPOINT__LKG_MAX_AGE": "2d",
        "AIRFLOW__CHECKPOINT__NOTIFY_EMAIL": "ops@example.com",
        "AIRFLOW__CHECKPOINT__NOTIFY_FROM": "airflow@example.com",
        "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true",
    }
    result = run_dag(airflow_env, "checkpoint_verify", {"level": "basic", "sample": 0}, extra_env=env)
    assert result["state"] == "success", result["log"][-3000:]
    assert result["xcom"]["lkg_age"]["checkpoint_id"] == lkg and result["xcom"]["lkg_age"]["max_age_seconds"] == 172800
    assert inbox.messages == []
