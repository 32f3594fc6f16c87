"""In-orbit services: what the emulated satellites compute, and how it is measured.

Computation (pure numpy/scipy, no network):
- :mod:`~netemu.services.scene`: a sensor's seeded SAR scene with moving targets
  whose true positions are known;
- :mod:`~netemu.services.detect`: CA-CFAR detection (CPU or GPU arrays);
- :mod:`~netemu.services.track`: a constant-velocity Kalman tracker;
- :mod:`~netemu.services.backend`: CPU or CUDA, chosen automatically.

On the wire and on the hosts:
- :mod:`~netemu.services.protocol`: the messages (scapy layers), reassembly;
- :mod:`~netemu.services.sensor`, :mod:`~netemu.services.inference`,
  :mod:`~netemu.services.consumer`: the applications (shared bits in
  :mod:`~netemu.services.app`);
- :mod:`~netemu.services.image`: their container image (built offline);
- :mod:`~netemu.services.deploy`: running them on an emulation, as its workloads.

Results: :mod:`~netemu.services.measure` (stages, percentiles, accuracy),
:mod:`~netemu.services.results` (JSON/CSV/PNG), and
:mod:`~netemu.services.scenario` (what ``scenarios/*.py`` share).
"""
