#!/usr/bin/env bash
# Installs the test SMSC's SMPP library, Debian's libnet-smpp-perl (Net::SMPP), when
# missing (as root, like scripts/check_deploy.sh's packages). Idempotent.
set -euo pipefail
if perl -MNet::SMPP -e 1 2>/dev/null; then
  exit 0
fi
echo "installing from Debian: libnet-smpp-perl (the test SMSC, tests/smsc/smsc.pl)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnet-smpp-perl >/dev/null
