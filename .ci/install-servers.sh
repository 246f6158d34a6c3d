#!/usr/bin/env bash
# Installs the Debian packages the real-server tests need (idempotent; run as root):
#   postgresql  initdb/pg_ctl for the throwaway cluster of tests/observe/conftest.py
#   chromium    headless screenshots and DOM dumps of the MLflow UI (tests/servers.py)
#   prometheus  promtool (and the prometheus server for the dashboard test)
#   prometheus-pushgateway  where CLI runs push their metrics
#   prometheus-alertmanager  amtool, which checks the alertmanager.yml of deploy bundles
# The tests start their own PostgreSQL cluster as the 'postgres' user, so the package's
# default cluster (15/main) and its service are neither created nor started here.
# Use: bash .ci/install-servers.sh   (or source it and call install_servers)
set -euo pipefail

install_servers() {
    local packages=(postgresql chromium prometheus prometheus-pushgateway prometheus-alertmanager)
    local missing=() pkg
    for pkg in "${packages[@]}"; do
        # dpkg -s also succeeds for removed-but-not-purged packages: check the status line.
        if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        echo "install-servers: ${packages[*]} already installed"
        return 0
    fi
    echo "install-servers: installing ${missing[*]}"

    local sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi

    # No default cluster: postgresql-common reads drop-ins from createcluster.d (not a
    # conffile, so dpkg asks nothing about it).
    "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" |
        "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/no-main-cluster.conf >/dev/null

    # Keep maintainer scripts from starting services (postgresql, prometheus) while we
    # install; leave an existing policy in place.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        own_policy=1
    fi

    local status=0
    "${sudo[@]}" apt-get update -q || status=$?
    if ((status == 0)); then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}" || status=$?
    fi
    if ((own_policy)); then
        "${sudo[@]}" rm -f "$policy"
    fi
    if ((status != 0)); then
        echo "install-servers: apt-get failed with exit code $status" >&2
        return "$status"
    fi

    ls /usr/lib/postgresql/*/bin/initdb /usr/bin/chromium /usr/bin/promtool /usr/bin/prometheus \
        /usr/bin/amtool >/dev/null
    id -u postgres >/dev/null
}

# Run when executed, not when sourced.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    install_servers "$@"
fi
