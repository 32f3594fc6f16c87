"""In-orbit services: what the emulated satellites compute.

- :mod:`netemu.services.scene`: a sensor's synthetic, seeded SAR scene with
  moving targets whose true positions are known;
- :mod:`netemu.services.detect`: CA-CFAR detection on an image tile;
- :mod:`netemu.services.track`: a constant-velocity Kalman tracker;
- :mod:`netemu.services.protocol`: the messages on the wire (scapy layers)
  and frame reassembly that counts what it loses.

Pure computation (numpy/scipy), independent of the network; the sensor and
inference applications that run on the emulated hosts are built on them.
"""
