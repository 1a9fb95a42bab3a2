"""The dashboard in a real headless Chromium against a real agent: what an operator would check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from shoal.interfaces import Instance, WorkloadSpec
from shoal.runtime import MockRuntime
from tests.ui.conftest import NODE, Enrolled, LiveAgent, Pages, enrol
from tests.ui.test_assets import TRANSFERRED

pytestmark = pytest.mark.slow

API = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: busybox:1.36
"""


def web_instances(agent: LiveAgent) -> list[Instance]:
    return agent.call(agent.node.service.list_instances, "default", "web")


def test_a_tampered_request_is_refused_and_an_untampered_one_served_once(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    opened = pages.open(operator, agent, "/ui/nodes")
    outcome: dict[str, Any] = opened.page.evaluate(
        """async () => {
          const base = location.origin;
          const reason = async (r) =>
            r.status + " " + (r.ok ? "" : (await r.json()).error.details.reason);
          const signed = await shoalUi.signHeaders("GET", base + "/ui/f/workloads", null);
          const other = await fetch(base + "/ui/f/nodes", {headers: signed});
          const scale = base + "/ui/f/workloads/default/web/scale";
          const post = await shoalUi.signHeaders("POST", scale, '{"replicas": "1"}');
          const body = await fetch(scale,
            {method: "POST", headers: post, body: '{"replicas": "9"}'});
          const first = await fetch(base + "/ui/f/workloads", {headers: signed});
          const again = await fetch(base + "/ui/f/workloads", {headers: signed});
          const rest = await shoalUi.signedFetch("GET", base + "/v1/workloads");
          return {other: await reason(other), body: await reason(body), first: await reason(first),
                  again: await reason(again), rest: rest.status};
        }"""
    )
    assert outcome == {
        "other": "401 bad_signature",  # signed for another URL
        "body": "401 digest_mismatch",  # the body changed after signing
        "first": "200 ",
        "again": "401 replayed",
        "rest": 200,  # the browser signs as the CLI does: the REST API accepts it too
    }
    assert agent.call(agent.node.service.get_workload, "web").spec.replicas == 2


def test_a_viewer_sees_no_controls_and_a_hand_made_delete_is_refused(
    viewer: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    opened = pages.open(viewer, agent, "/ui/workloads/default/web")
    page = opened.page
    expect(page.locator("#page h1")).to_have_text("Workload default/web")
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.locator("form.scale")).to_have_count(0)
    refused: dict[str, Any] = page.evaluate(
        """async () => {
          const ui = await shoalUi.signedFetch("POST", "/ui/f/workloads/default/web/delete", "{}");
          const rest = await shoalUi.signedFetch("DELETE", "/v1/workloads/default/web");
          return {ui: ui.status, code: (await ui.json()).error.code, rest: rest.status};
        }"""
    )
    assert refused == {"ui": 403, "code": "forbidden", "rest": 403}
    assert not agent.call(agent.node.service.get_workload, "web").deleting


def test_shoal_scale_in_a_subprocess_shows_on_an_open_page_within_a_second(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    opened = pages.open(operator, agent, "/ui/workloads/default/web")
    page = opened.page
    expect(page.locator(".desired")).to_have_text("2")
    expect(page.locator(".ready")).to_have_text("2/2")
    replicas = page.locator("form.scale input[name=replicas]")
    replicas.fill("7")  # being typed when the change arrives
    agent.cli("scale", "web", "3")
    expect(page.locator(".desired")).to_have_text("3", timeout=1000)
    expect(page.locator(".ready")).to_have_text("3/3")
    expect(replicas).to_have_value("7")  # the live refresh left the form alone
    # And back, from the page itself.
    page.fill("form.scale input[name=replicas]", "2")
    page.click("form.scale button")
    expect(page.locator("#notice")).to_have_text("default/web scaled to 2 replicas")
    expect(page.locator(".desired")).to_have_text("2", timeout=1000)
    assert opened.errors == []


def test_scaling_to_zero_takes_a_plan_as_in_mcp(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    page = pages.open(operator, agent, "/ui/workloads/default/web").page
    expect(page.locator(".ready")).to_have_text("2/2")
    try:
        page.fill("form.scale input[name=replicas]", "0")
        page.click("form.scale button")
        expect(page.locator("#notice .plan")).to_contain_text("every instance stops")
        assert agent.call(agent.node.service.get_workload, "web").spec.replicas == 2
        page.click("#notice [data-confirm]")
        expect(page.locator("#notice")).to_have_text("default/web scaled to 0 replicas")
        expect(page.locator(".desired")).to_have_text("0")
    finally:
        agent.call(agent.node.service.scale, "web", 2)
    expect(page.locator(".ready")).to_have_text("2/2")


def test_rollout_pause_needs_the_plan_id_and_a_stale_plan_is_refused(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    page = pages.open(operator, agent, "/ui/workloads/default/web").page
    page.click("[data-action=pause]")
    plan = page.locator("#notice .plan")
    expect(plan).to_contain_text("pause rollouts")
    stale_plan = plan.get_attribute("data-plan-id")
    agent.cli("scale", "web", "3")  # the workload changes under the plan
    page.click("#notice [data-confirm]")
    expect(page.locator("#notice")).to_contain_text(f"changed since plan {stale_plan}")
    page.click("[data-action=pause]")
    expect(page.locator("#notice .plan")).to_be_visible()
    assert page.locator("#notice .plan").get_attribute("data-plan-id") != stale_plan
    page.click("#notice [data-confirm]")
    expect(page.locator("#notice")).to_have_text("pause: done for default/web")
    expect(page.locator(".facts")).to_contain_text("paused")
    assert agent.call(agent.node.service.get_workload, "web").spec.paused
    agent.call(agent.node.service.pause_rollout, "web", False)
    agent.cli("scale", "web", "2")


def test_a_delete_plan_names_the_instances_that_stop(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    page = pages.open(operator, agent, "/ui/workloads/default/web").page
    expect(page.locator(".ready")).to_have_text("2/2")
    page.click("[data-action=delete]")
    instances = agent.call(agent.node.service.list_instances, "default", "web")
    names = ", ".join(sorted(i.name for i in instances))
    expect(page.locator("#notice .plan")).to_contain_text(f"(2 instance(s) stop: {names})")
    assert not agent.call(agent.node.service.get_workload, "web").deleting  # not confirmed


def test_apply_shows_the_plan_then_applies_on_confirm(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    page = pages.open(operator, agent, "/ui/apply").page
    page.fill("#apply-yaml", "kind: Workload\nname: broken\n  replicas: 2\n")
    page.click("#apply-form button[type=submit]")
    expect(page.locator(".apply-error .bad-line")).to_contain_text("replicas: 2")
    expect(page.locator(".apply-error .error-message")).to_contain_text("dashboard: line 3")
    page.fill("#apply-yaml", "kind: Workload\nname: broken\nreplicas: -1\n")
    page.click("#apply-form button[type=submit]")
    expect(page.locator(".apply-error .error-message")).to_contain_text(
        "field replicas: Input should be greater than or equal to 0"  # as the CLI words it
    )
    expect(page.locator(".apply-error .bad-line")).to_contain_text("replicas: -1")
    page.fill("#apply-yaml", API)
    page.click("#apply-form button[type=submit]")
    plan = page.locator("#apply-result .plan")
    expect(plan).to_contain_text("Workload default/api")
    expect(plan).to_contain_text("create")
    with pytest.raises(Exception, match="api"):
        agent.call(agent.node.service.get_workload, "api")
    page.click("[data-confirm-apply]")
    expect(page.locator("#apply-result")).to_contain_text("applied: create Workload default/api")
    assert agent.call(agent.node.service.get_workload, "api").spec.replicas == 1


def test_logs_follow_filter_and_download(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    workload = pages.open(operator, agent, "/ui/workloads/default/web").page
    expect(workload.locator(".ready")).to_have_text("2/2")  # its instances run
    instance = next(i for i in web_instances(agent) if i.state.value == "running")
    page = pages.open(operator, agent, f"/ui/instances/default/{instance.name}").page
    lines = page.locator("[data-log-lines] .line")
    expect(lines.first).to_contain_text("started web")
    agent.write_log(instance.uid, "web", "GET /index.html found")
    agent.write_log(instance.uid, "web", "GET /missing not-found")
    expect(lines).to_have_count(3)
    expect(lines.last).to_contain_text("GET /missing not-found")
    page.fill("[data-log-filter]", "not-found")
    visible = page.locator("[data-log-lines] .line:not([hidden])")
    expect(visible).to_have_count(1)
    expect(visible).to_contain_text("/missing")
    agent.write_log(instance.uid, "web", "GET /gone not-found")
    expect(visible).to_have_count(2)
    with page.expect_download() as download:
        page.click("[data-log-download]")
    saved = Path(download.value.path()).read_text()
    assert "/missing not-found" in saved and "/gone not-found" in saved
    assert "index.html" not in saved  # the download holds what the filter shows


def test_a_restarted_instances_previous_run_is_one_click_away(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    service = agent.node.service
    crashy = WorkloadSpec.model_validate(
        {"name": "crashy", "template": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}
    )
    agent.call(service.apply, [crashy])
    try:
        workload = pages.open(operator, agent, "/ui/workloads/default/crashy").page
        expect(workload.locator(".ready")).to_have_text("1/1")
        (first,) = agent.call(service.list_instances, "default", "crashy")
        page = pages.open(operator, agent, f"/ui/instances/default/{first.name}").page
        agent.write_log(first.uid, "app", "last words before the crash")
        runtime = agent.node.runtime
        assert isinstance(runtime, MockRuntime)
        agent.portal.call(runtime.kill, first.uid, "app")
        # The status refreshes itself on the change: restarted, and running again.
        expect(page.locator("dt:text('Restarts') + dd")).to_have_text("1")
        expect(page.locator("dt:text('State') + dd")).to_have_text("running")
        page.reload()  # the log of the run now
        lines = page.locator("[data-log-lines]")
        expect(lines).to_contain_text("started app")
        expect(lines).not_to_contain_text("last words")
        page.check("[data-log-previous]")
        expect(lines).to_contain_text("last words before the crash")
        expect(page.locator("[data-log-follow]")).to_be_disabled()
        page.uncheck("[data-log-previous]")
        expect(lines).not_to_contain_text("last words")
        expect(page.locator("[data-log-follow]")).to_be_enabled()
    finally:
        agent.call(service.delete_workload, "crashy")


def test_every_page_renders_without_console_errors_and_keeps_no_secret(
    operator: Enrolled, agent: LiveAgent, pages: Pages, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shots = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nscreenshots of the dashboard: {shots}")
    instance = web_instances(agent)[0]
    paths = {
        "overview": "/ui",
        "workloads": "/ui/workloads",
        "workload": "/ui/workloads/default/web",
        "instances": "/ui/instances",
        "instance": f"/ui/instances/default/{instance.name}",
        "nodes": "/ui/nodes",
        "node": f"/ui/nodes/{NODE}",
        "events": "/ui/events",
        "events-via-ui": "/ui/events?via=ui",
        "apply": "/ui/apply",
        "manifests": "/ui/manifests",
        "search": "/ui/search?q=web",
    }
    overview = pages.open(operator, agent, "/ui").page
    expect(overview.locator(".leader")).to_have_text(f"{NODE} (this node)")
    objectives = overview.locator("tr.slo")
    expect(objectives).to_have_count(3)
    expect(objectives.first).to_contain_text("instance start p99 <= 5 s")
    for name, path in paths.items():
        opened = pages.open(operator, agent, path)
        opened.page.screenshot(path=shots / f"{name}.png", full_page=True)
        assert opened.errors == [], f"{path}: {opened.errors}"
        scripts: list[dict[str, Any]] = opened.page.evaluate(
            """() => performance.getEntriesByType("resource")
                 .filter((e) => e.initiatorType === "script")
                 .map((e) => ({name: e.name, sent: e.transferSize,
                               encoded: e.encodedBodySize, decoded: e.decodedBodySize}))"""
        )
        assert scripts, path
        # Through the agent, in a real browser: gzipped, and cached since the overview.
        assert all(s["encoded"] < s["decoded"] for s in scripts), scripts
        assert sum(s["encoded"] for s in scripts) <= TRANSFERRED, scripts
        assert all(s["sent"] == 0 for s in scripts), f"{path} fetched them again: {scripts}"
        opened.page.close()
    opened = pages.open(operator, agent, "/ui/events?via=ui")
    page = opened.page
    for replicas in (3, 2):  # changes made through the dashboard, to find in the audit
        status = page.evaluate(
            """async (n) => (await shoalUi.signedFetch("POST",
                 "/ui/f/workloads/default/web/scale", JSON.stringify({replicas: n}))).status""",
            replicas,
        )
        assert status == 200
    expect(page.locator("td.via").first).to_have_text("ui")
    expect(page.locator("td.actor").first).to_have_text(operator.key_id)
    page.select_option("form.filters select[name=via]", "system")  # what the seeding did
    expect(page.locator("td.via").first).to_have_text("system")
    assert set(page.locator("td.via").all_inner_texts()) == {"system"}
    page.fill("form.filters input[name=actor]", "nobody-at-all")
    page.press("form.filters input[name=actor]", "Enter")
    expect(page.locator("table.events tbody")).to_have_text("No events.")
    storage = page.evaluate(
        """async () => {
          const result = (request) =>
            new Promise((ok) => { request.onsuccess = () => ok(request.result); });
          const db = await result(indexedDB.open("shoal-ui"));
          const pair = await result(db.transaction("keys").objectStore("keys").get("device"));
          let exported = "exported";
          try {
            await crypto.subtle.exportKey("pkcs8", pair.privateKey);
          } catch (e) {
            exported = e.name;
          }
          return {local: {...localStorage}, session: {...sessionStorage},
                  cookie: document.cookie, extractable: pair.privateKey.extractable, exported};
        }"""
    )
    # htmx remembers the page's path for its history; nothing else is kept.
    assert storage["session"] in ({}, {"htmx-current-path-for-history": "/ui/events?via=ui"})
    assert {**storage, "session": {}} == {
        "local": {},
        "session": {},
        "cookie": "",
        "extractable": False,
        "exported": "InvalidAccessError",
    }
    assert operator.context.cookies() == []
    assert opened.errors == []


def test_a_revoked_key_sends_the_page_back_to_enrolment_with_the_reason(
    browser: Browser, agent: LiveAgent
) -> None:
    enrolled = enrol(browser, agent, "viewer")
    try:
        page = enrolled.context.new_page()
        page.goto(agent.url + "/ui/nodes")
        expect(page.locator("#page h1")).to_have_text("Nodes")
        keys = agent.data_dir / "authorized_keys"
        kept = [line for line in keys.read_text().splitlines() if enrolled.key_id not in line]
        keys.write_text("\n".join(kept) + "\n")
        page.goto(agent.url + "/ui/workloads")
        expect(page.locator("#enrol")).to_be_visible()
        expect(page.locator("#enrol-reason")).to_contain_text(
            f"key id {enrolled.key_id!r} is not authorized"
        )
        expect(page.locator("#page")).to_be_hidden()
    finally:
        enrolled.context.close()


def test_a_one_time_enrolment_code_enrols_one_browser(browser: Browser, agent: LiveAgent) -> None:
    made = agent.cli(
        "keys",
        "enrol-code",
        "--role",
        "viewer",
        "--minutes",
        "5",
        "--data-dir",
        str(agent.data_dir),
    )
    code = made.stdout.strip()
    first, second = browser.new_context(), browser.new_context()
    try:
        page = first.new_page()
        page.goto(agent.url + "/ui/nodes")
        expect(page.locator("#enrol")).to_be_visible()
        page.fill("#enrol-code", "AAAA-BBBB-CCCC-DDDD")
        page.click("#enrol-code-form button")
        expect(page.locator("#enrol-reason")).to_contain_text("unknown, used or expired")
        page.fill("#enrol-code", code)
        page.click("#enrol-code-form button")
        expect(page.locator("#who")).to_contain_text("· viewer")
        expect(page.locator("#page h1")).to_have_text("Nodes")
        other = second.new_page()  # the code is used up
        other.goto(agent.url + "/ui/nodes")
        other.fill("#enrol-code", code)
        other.click("#enrol-code-form button")
        expect(other.locator("#enrol-reason")).to_contain_text("unknown, used or expired")
        expect(other.locator("#page")).to_be_hidden()
    finally:
        first.close()
        second.close()


def test_text_a_workload_controls_is_never_markup_the_page_acts_on(
    operator: Enrolled, agent: LiveAgent, pages: Pages
) -> None:
    """A log line or a label that reads as an htmx form does nothing, wherever it shows."""
    instance = next(i for i in web_instances(agent) if i.state.value == "running")
    hostile = f'<form hx-post="/ui/f/nodes/{instance.node}/cordon" hx-trigger="load"></form>'
    agent.write_log(instance.uid, "web", hostile)
    traversal = '<form hx-post="/ui/f/../../v1/workloads/default/web/scale" hx-trigger="load">'
    agent.write_log(instance.uid, "web", traversal)
    for path in [
        f"/ui/instances/default/{instance.name}/logs",  # its NDJSON, not a page
        "/ui/workloads/..%2F..%2F..%2Fv1%2Fworkloads",  # an encoded way out of /ui/f/
    ]:
        page = pages.track(operator.context.new_page())
        page.goto(agent.url + path)
        expect(page.locator("#page")).to_have_text("No such page.", timeout=5000)
        expect(page.locator("form[hx-post]")).to_have_count(0)
    shown = pages.open(operator, agent, f"/ui/instances/default/{instance.name}").page
    expect(shown.locator("[data-log-lines] .line").last).to_contain_text("hx-post")  # as text
    # Markup that got in anyway may not lead the signing hook out of /ui/f/.
    shown.evaluate(
        """() => {
          const form = document.createElement("form");
          form.setAttribute("hx-post", "/ui/f/../../v1/workloads/default/web/scale");
          form.setAttribute("hx-vals", JSON.stringify({replicas: 5}));
          form.setAttribute("hx-trigger", "load");
          document.getElementById("content").append(form);
          htmx.process(form);
        }"""
    )
    expect(shown.locator("#notice")).to_contain_text("refused a request outside the dashboard")
    node = agent.call(agent.node.service.get_node, instance.node or "")
    assert not node.cordoned
    assert agent.call(agent.node.service.get_workload, "web").spec.replicas == 2
