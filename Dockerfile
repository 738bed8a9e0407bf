# syntax=docker/dockerfile:1
# One image for every strongmesh component:
#   operator:  strongmesh operator            (runs as the non-root user below)
#   agent:     strongmesh agent --node ...     (root with NET_ADMIN only, set by the chart)
#   charon:    /usr/lib/ipsec/charon           (Debian's strongSwan; root with NET_ADMIN and
#                                               NET_BIND_SERVICE, set by the chart)
# Build: docker build -t strongmesh:0.1.0 .
#    or, with no registry: hack/build-image (buildah; a Debian base made with debootstrap)

# Both stages start from this Debian bookworm image; hack/build-image passes its own
# (--build-arg BASE_IMAGE=localhost/debian:bookworm-slim).
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: a virtualenv with strongmesh and its dependencies -------------------------------
FROM ${BASE_IMAGE} AS build

# Versions come from the Debian release pinned above; pinning each package too would break
# the build at every Debian point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The venv uses Debian's /usr/bin/python3, which the runtime stage installs too. Every package
# comes from the hashed lock (the build backend too: no build isolation, nothing unpinned).
# Dependencies first, in a layer of their own: a change to controller/ reuses it.
# Behind a TLS-intercepting proxy, pass its CA bundle as the optional build secret `pip-ca`
# (`--secret id=pip-ca,src=FILE`; hack/build-image does it): mounted for this step only.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/strongmesh \
 && /opt/strongmesh/bin/pip install --no-cache-dir --no-compile --disable-pip-version-check \
      --require-hashes --no-deps -r requirements/runtime.txt -r requirements/build.txt

# Then the project itself (no dependencies to fetch: nothing leaves the machine). pip and
# setuptools are removed afterwards: the final image carries no installer.
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN /opt/strongmesh/bin/pip install --no-cache-dir --no-compile --disable-pip-version-check \
      --no-deps --no-build-isolation --no-index . \
 && /opt/strongmesh/bin/python -m compileall -q /opt/strongmesh/lib \
 && /opt/strongmesh/bin/pip uninstall -y pip setuptools \
 && rm -rf /opt/strongmesh/bin/pip* /opt/strongmesh/bin/activate*

# --- runtime: Python, strongSwan from Debian, nothing to compile with ------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="strongmesh" \
      org.opencontainers.image.description="Node-to-node IPsec for Kubernetes with strongSwan" \
      org.opencontainers.image.licenses="Apache-2.0"

# charon, swanctl (probes, debugging), the standard crypto plugins (openssl, gcm, ...) and
# iproute2 for `ip xfrm` inspection. kdf, pkcs8, x509, kernel-netlink come with libstrongswan.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 \
      strongswan-charon \
      strongswan-swanctl \
      libstrongswan-standard-plugins \
      iproute2 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 strongmesh \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin strongmesh

COPY --from=build /opt/strongmesh /opt/strongmesh

ENV PATH="/opt/strongmesh/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Non-root by default (the operator); the chart runs the agent and charon as root with a
# minimal capability set because xfrm and ports 500/4500 need it.
USER 65532:65532
ENTRYPOINT ["/opt/strongmesh/bin/strongmesh"]
CMD ["--help"]
