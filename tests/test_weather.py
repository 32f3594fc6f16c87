"""Clouds: reproducible series, their statistics, who they affect, site diversity."""

import json

import numpy as np
import pytest

from netemu.model.weather import RESOLUTION_S, CloudSeries, availability

from helpers import REPO, run_netemu

DAYS = np.arange(0, 400 * 86400, RESOLUTION_S)


def test_the_same_seed_gives_the_same_weather():
    a = CloudSeries("svalbard", 0.69, 7200, seed=1).cloudy(DAYS[:5000])
    b = CloudSeries("svalbard", 0.69, 7200, seed=1).cloudy(DAYS[:5000])
    c = CloudSeries("svalbard", 0.69, 7200, seed=2).cloudy(DAYS[:5000])
    d = CloudSeries("c2_bodo", 0.69, 7200, seed=1).cloudy(DAYS[:5000])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # Asking in pieces, or out of order, gives the same answer.
    s = CloudSeries("svalbard", 0.69, 7200, seed=1)
    assert np.array_equal(
        np.r_[s.cloudy(DAYS[2500:5000]), s.cloudy(DAYS[:2500])], np.r_[a[2500:], a[:2500]]
    )


def test_cloud_statistics_match_the_parameters():
    sky = CloudSeries("x", 0.69, 7200, seed=5).cloudy(DAYS)
    assert 1 - sky.mean() == pytest.approx(0.69, abs=0.02)
    starts = np.flatnonzero(np.diff(sky.astype(int)) == 1)
    ends = np.flatnonzero(np.diff(sky.astype(int)) == -1)
    spells = (ends[ends > starts[0]][: len(starts) - 1] - starts[: len(starts) - 1]) * RESOLUTION_S
    assert spells.mean() == pytest.approx(7200, rel=0.1)


def test_site_diversity_combined_availability():
    """Independent sites: P(all cloudy) is the product (notes: 8 sites ~99.97%)."""
    sites = np.array([~CloudSeries(f"gs{i}", 0.69, 7200, seed=9).cloudy(DAYS) for i in range(8)])
    per_site, combined = availability(sites.T)
    assert per_site == pytest.approx([0.69] * 8, abs=0.03)
    assert combined == pytest.approx(1 - np.prod(1 - per_site), abs=5e-4)
    assert combined > 0.999


def plan_with_weather(tmp_path, weather: str, extra: str = "") -> list[dict]:
    text = (REPO / "topologies/kepler.yaml").read_text() + f"\nweather: {weather}\n" + extra
    path = tmp_path / "k.yaml"
    path.write_text(text)
    result = run_netemu("plan", path, "--duration", "21600", "--step", "20", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_clouds_cut_ground_links_but_not_high_aircraft(tmp_path):
    epochs = plan_with_weather(tmp_path, "{cloud_free_probability: 0.3, mean_cloudy_spell_s: 1800}")
    downs = [e for ep in epochs for e in ep["events"] if e["type"] == "link-down"]
    clouded = [e for e in downs if e["reason"] == "clouds"]
    assert clouded and all(e["b"] in {"svalbard", "c2_bodo"} for e in clouded)
    assert not any(e["b"] == "patrol1" and e["reason"] == "clouds" for e in downs)
    # The patrol at 10 km flies above 10 km cloud tops; drop the tops below it and it is hit.
    low = plan_with_weather(
        tmp_path, "{cloud_free_probability: 0.3, mean_cloudy_spell_s: 1800, cloud_top_km: 12}"
    )
    assert any(
        e["b"] == "patrol1" and e["reason"] == "clouds"
        for ep in low
        for e in ep["events"]
        if e["type"] == "link-down"
    )


def test_plan_reports_availability(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text((REPO / "topologies/kepler.yaml").read_text() + "\nweather: {seed: 3}\n")
    result = run_netemu("plan", path, "--duration", "7200", "--step", "30")
    assert result.returncode == 0, result.stderr
    assert "Availability" in result.stdout and "any ground station" in result.stdout
