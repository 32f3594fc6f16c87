"""Optical link physics: link budget, photons per bit, bit and packet error rates.

Pure computation, vectorised over links. Formulas and defaults are those of
``shared/notes/link-physics.md``:

- received power (Friis with a Gaussian beam, G_t = 8/θ², θ the 1/e²
  half-angle divergence)::

      P_r = P_t η_t η_r L_atm L_point D_r² / (2 θ² L²)

- pointing loss for a pointing error θ_e: ``L_point = exp(-2 θ_e² / θ²)``;
  with a random jitter of rms σ per axis the instantaneous loss is below x
  with probability ``x ** (θ² / (4 σ²))`` (θ_e² is exponentially distributed);
- photons per bit ``n = P_r / (h c / λ · R_b)`` and the bit error rate of the
  receiver's modulation: ideal DPSK ½ e^-n, homodyne BPSK ½ erfc(√(2n)),
  pre-amplified OOK ½ erfc(Q/√2) with Q = 6 √(n / n_req) (BER 1e-9 at the
  receiver's sensitivity n_req photons per bit; 38.4 is the quantum limit);
- packet error rate for N-byte packets: uncoded ``1 - (1 - BER)^(8N)``; with
  an LDPC-like code the frame error rate is the probability that the
  instantaneous photon count falls below the code's cliff, and
  ``PER = 1 - (1 - FER)^ceil(8N / 8416)``;
- clear-sky atmosphere: transmittance ``T_zenith ** (1 / sin(elevation))``;
- turbulence (Hufnagel-Valley 5/7): the downlink Rytov variance
  ``σ_R² = 2.25 k^(7/6) sec^(11/6)(ζ) ∫ Cn²(h) (h − h0)^(5/6) dh`` gives the
  scintillation index (weak turbulence: σ_I² ≈ σ_R²); irradiance is lognormal
  with σ² = ln(1 + σ_I²), and the probability that it fades below the
  receiver's threshold is the bad-state probability of a Gilbert-Elliott
  burst-loss chain whose mean bad duration is the fade duration.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import quad
from scipy.special import erfc, erfcinv

PLANCK_J_S = 6.62607015e-34
SPEED_OF_LIGHT_M_S = 299_792_458.0
#: Information bits per LDPC frame (SDA optical terminal standard, notes).
LDPC_FRAME_BITS = 8416
#: Packet size the plan's ``loss`` figure is given for.
REFERENCE_PACKET_BYTES = 1500


@dataclass(frozen=True)
class Terminal:
    """An optical terminal's transmit and receive sides."""

    tx_power_w: float
    divergence_urad: float  # 1/e² half-angle
    aperture_m: float  # receive aperture diameter
    wavelength_nm: float = 1553.33
    efficiency: float = 0.8  # optics throughput, transmit or receive side each
    pointing_jitter_urad: float = 1.5  # rms per axis
    modulation: str = "ook"  # ook | dpsk | bpsk
    sensitivity_ppb: float = 38.4  # OOK: photons per bit for BER 1e-9
    fec: bool = True
    fec_cliff_ppb: float = 11.0  # LDPC rate 1/2 cliff (notes)


def received_power_w(tx: Terminal, rx: Terminal, range_km, l_atm=1.0, l_point=1.0):
    """Mean received power (W) over ``range_km`` (vectorised)."""
    theta = tx.divergence_urad * 1e-6
    r_m = np.asarray(range_km, dtype=float) * 1e3
    return (
        tx.tx_power_w
        * tx.efficiency
        * rx.efficiency
        * l_atm
        * l_point
        * rx.aperture_m**2
        / (2 * theta**2 * r_m**2)
    )


def mean_pointing_loss(tx: Terminal) -> float:
    """E[exp(-2 θ_e²/θ²)] for Rayleigh-distributed pointing error (σ per axis)."""
    ratio = 4 * (tx.pointing_jitter_urad / tx.divergence_urad) ** 2
    return 1.0 / (1.0 + ratio)


def photons_per_bit(power_w, wavelength_nm: float, rate_bps: float):
    photon_j = PLANCK_J_S * SPEED_OF_LIGHT_M_S / (wavelength_nm * 1e-9)
    return np.asarray(power_w, dtype=float) / (photon_j * rate_bps)


def bit_error_rate(n_ppb, modulation: str, sensitivity_ppb: float = 38.4):
    """BER at ``n_ppb`` photons per bit (vectorised)."""
    n = np.maximum(np.asarray(n_ppb, dtype=float), 0.0)
    if modulation == "dpsk":
        return 0.5 * np.exp(-n)
    if modulation == "bpsk":
        return 0.5 * erfc(np.sqrt(2 * n))
    if modulation == "ook":
        q = 6.0 * np.sqrt(n / sensitivity_ppb)
        return 0.5 * erfc(q / math.sqrt(2))
    raise ValueError(f"unknown modulation {modulation!r}")


def packet_error_rate_uncoded(ber, packet_bytes: int = REFERENCE_PACKET_BYTES):
    # log1p keeps tiny BERs exact: 1 - (1 - b)^k = -expm1(k log1p(-b)).
    with np.errstate(divide="ignore"):  # b = 1: log1p(-1) = -inf, PER = 1
        return -np.expm1(8 * packet_bytes * np.log1p(-np.asarray(ber, dtype=float)))


def packet_error_rate_coded(fer, packet_bytes: int = REFERENCE_PACKET_BYTES):
    frames = math.ceil(8 * packet_bytes / LDPC_FRAME_BITS)
    with np.errstate(divide="ignore"):  # FER = 1: PER = 1
        return -np.expm1(frames * np.log1p(-np.minimum(np.asarray(fer, dtype=float), 1.0)))


def pointing_fade_probability(tx: Terminal, below):
    """P(instantaneous pointing loss < below) under the terminal's jitter."""
    beta = (tx.divergence_urad / tx.pointing_jitter_urad) ** 2 / 4
    x = np.clip(np.asarray(below, dtype=float), 0.0, None)
    return np.where(x >= 1.0, 1.0, x**beta)


def atmosphere_transmittance(zenith_transmittance: float, elevation_deg):
    """Clear-sky transmittance along a slant path (plane-parallel air mass)."""
    s = np.sin(np.radians(np.clip(np.asarray(elevation_deg, dtype=float), 1.0, 90.0)))
    return zenith_transmittance ** (1.0 / s)


@dataclass
class Budget:
    """One link direction's figures, arrays over links."""

    rx_power_w: np.ndarray
    photons_per_bit: np.ndarray
    ber: np.ndarray
    loss: np.ndarray  # packet loss probability for REFERENCE_PACKET_BYTES

    @property
    def rx_power_dbm(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 10 * np.log10(np.asarray(self.rx_power_w) * 1e3)


def link_budget(tx: Terminal, rx: Terminal, range_km, rate_gbps: float, l_atm=1.0) -> Budget:
    """Budget of the direction tx -> rx at these ranges (vectorised).

    The BER uses the mean received power (mean pointing loss); with FEC, the
    packet loss is driven by fades below the code's cliff (pointing jitter).
    """
    p_mean = received_power_w(tx, rx, range_km, l_atm, mean_pointing_loss(tx))
    n = photons_per_bit(p_mean, tx.wavelength_nm, rate_gbps * 1e9)
    ber = bit_error_rate(n, rx.modulation, rx.sensitivity_ppb)
    if rx.fec:
        p_peak = received_power_w(tx, rx, range_km, l_atm, 1.0)
        n_peak = photons_per_bit(p_peak, tx.wavelength_nm, rate_gbps * 1e9)
        with np.errstate(divide="ignore"):
            fer = pointing_fade_probability(tx, rx.fec_cliff_ppb / n_peak)
        loss = packet_error_rate_coded(fer)
    else:
        loss = packet_error_rate_uncoded(ber)
    return Budget(p_mean, n, ber, loss)


# -- turbulence -------------------------------------------------------------------------


def hufnagel_valley_cn2(h_m, wind_m_s: float = 21.0, ground_a: float = 1.7e-14):
    """Refractive-index structure parameter Cn² (m^-2/3) at altitude h (HV 5/7)."""
    h = np.asarray(h_m, dtype=float)
    return (
        0.00594 * (wind_m_s / 27) ** 2 * (1e-5 * h) ** 10 * np.exp(-h / 1000)
        + 2.7e-16 * np.exp(-h / 1500)
        + ground_a * np.exp(-h / 100)
    )


@functools.cache
def _rytov_integral(h0_m: float, top_m: float = 30_000.0) -> float:
    value, _ = quad(
        lambda h: hufnagel_valley_cn2(h) * (h - h0_m) ** (5 / 6),
        h0_m,
        top_m,
        limit=200,
        points=[p for p in (100, 1000, 5000, 10_000) if p > h0_m],
    )
    return value


def rytov_variance(wavelength_nm: float, zenith_deg, h0_km: float):
    """Downlink (plane-wave) Rytov variance from a receiver at h0 (vectorised over zenith).

    σ_R² = 2.25 k^(7/6) sec^(11/6)(ζ) ∫ Cn²(h) (h - h0)^(5/6) dh from h0 up.
    """
    k = 2 * math.pi / (wavelength_nm * 1e-9)
    zen = np.radians(np.clip(np.asarray(zenith_deg, dtype=float), 0.0, 89.0))
    integral = _rytov_integral(round(max(h0_km, 0.0) * 1000, -1))
    return 2.25 * k ** (7 / 6) / np.cos(zen) ** (11 / 6) * integral


def lognormal_fade_probability(scintillation_index, threshold):
    """P(I < threshold) for unit-mean lognormal irradiance, σ² = ln(1 + σ_I²)."""
    s2 = np.log1p(np.asarray(scintillation_index, dtype=float))
    s = np.sqrt(np.maximum(s2, 1e-30))
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(np.asarray(threshold, dtype=float), 1e-300)) + s2 / 2) / s
    return 0.5 * erfc(-z / math.sqrt(2))


def photons_for_ber(ber: float, modulation: str, sensitivity_ppb: float = 38.4) -> float:
    """Photons per bit at which a receiver reaches ``ber`` (inverse of bit_error_rate)."""
    if modulation == "dpsk":
        return -math.log(2 * ber)
    if modulation == "bpsk":
        return float(erfcinv(2 * ber)) ** 2 / 2
    q = math.sqrt(2) * float(erfcinv(2 * ber))
    return sensitivity_ppb * (q / 6) ** 2


#: Without FEC a fade "counts" once the BER passes this: the link is then useless.
FADE_BER = 1e-3


def fade_threshold_ppb(rx: Terminal) -> float:
    """Photons per bit below which the receiver loses the packets of a fade."""
    return (
        rx.fec_cliff_ppb if rx.fec else photons_for_ber(FADE_BER, rx.modulation, rx.sensitivity_ppb)
    )
