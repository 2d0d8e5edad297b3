# iacloud: the two commands of the README, and the steps they are made of.
# Everything a fresh Debian machine needs is installed from here (run as root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
IMAGE  := build/images/tiny.qcow2
CLOUD_IMAGE := build/images/debian-12-cloud.qcow2
STAMP  := $(VENV)/.installed

.PHONY: test demo demo-destroy host image cloud-image install lint unit integration bench bench-host \
        lab-hosts lab-hosts-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	bash scripts/host-setup.sh --packages-only
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

host: install
	bash scripts/host-setup.sh

image: host
	bash scripts/build-image.sh $(IMAGE)

# a real Debian 12 cloud image (cloud-init, netplan/networkd, sshd, guest agent) for the e2e
# tests and the example stacks; ~1 min from Debian packages, cached until its inputs change
cloud-image: install
	bash scripts/build-cloud-image.sh $(CLOUD_IMAGE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: install
	$(BIN)/pytest -q tests/unit

test: image cloud-image lint
	$(BIN)/pytest -q tests

# the demo's image lies outside stacks/; in a git checkout it is inside the stack's tree anyway,
# IACLOUD_IMAGE_ROOTS lets the demo run from an unpacked archive too
demo: export IACLOUD_IMAGE_ROOTS := $(CURDIR)/build/images
demo-destroy: export IACLOUD_IMAGE_ROOTS := $(CURDIR)/build/images

demo: image
	$(BIN)/iacloud validate stacks/demo.toml
	$(BIN)/iacloud plan stacks/demo.toml
	$(BIN)/iacloud apply --auto-approve stacks/demo.toml
	$(BIN)/iacloud output --stack stacks/demo.toml

demo-destroy: install
	$(BIN)/iacloud destroy --auto-approve stacks/demo.toml

bench: install
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/state_backends.py
	$(BIN)/python bench/fuzz_inputs.py

# the benchmarks against a real libvirtd, netlink and dnsmasq (root; a few minutes)
bench-host: image
	$(BIN)/python bench/libvirt_apply.py
	$(BIN)/python bench/netlink_refresh.py
	$(BIN)/python bench/drift_scale.py

# several libvirt hosts on this machine (namespaces with their own libvirtd and sshd, on an
# underlay bridge in 198.19.250.0/24) for the many-hosts work; LAB_HOSTS=3 for three
LAB_HOSTS ?= 2
lab-hosts: host
	bash scripts/lab-hosts.sh up $(LAB_HOSTS)

lab-hosts-down:
	bash scripts/lab-hosts.sh down

clean:
	rm -rf build $(VENV) *.egg-info
