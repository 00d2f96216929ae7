"""One clock for the sandbox (sandbox/clock.py): the load balancers' periods and intervals follow
kiln.sandbox.time_scale like the moto server's pending states, never faster than 60×."""

from sandbox import clock


def test_the_network_clock_follows_the_sandbox_time_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(clock, "_STATE_DIR", tmp_path)
    (tmp_path / "time-scale").write_text("0.5\n")
    assert clock.real(60) == 30.0  # a realistic run: a period is half a minute
    (tmp_path / "time-scale").write_text("1\n")
    assert clock.real(300) == 300.0
    (tmp_path / "time-scale").write_text("0.002\n")  # the default: proxies at their fastest
    assert clock.real(60) == 60 / clock.FASTEST


def test_pending_states_and_the_network_read_the_same_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(clock, "_STATE_DIR", tmp_path)
    (tmp_path / "time-scale").write_text("0.25\n")
    moment = clock.after(4)  # 4 s of AWS time: one real second at this scale
    assert clock.scale() == 0.25 and not clock.passed(moment)
    assert clock.passed((moment[0] - 1.01, 4))
