"""iacloud: OpenStack-style servers, networks, volumes and images on plain libvirt hosts, driven by plan/apply."""

__version__ = "0.1.0"
