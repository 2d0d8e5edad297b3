"""iacloud: OpenStack-style servers, networks, volumes and images on libvirt hosts."""

__version__ = "0.1.0"
