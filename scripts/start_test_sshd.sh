#!/usr/bin/env bash
# Start a throwaway OpenSSH server on 127.0.0.1:PORT for the ssh runner's tests.
#
#   scripts/start_test_sshd.sh DIR PORT     prints the sshd pid on stdout
#
# Everything lives in DIR: the server's host key and config, a fresh client
# key (DIR/id_ed25519) authorized for the current user, DIR/known_hosts that
# trusts the server, and DIR/sshd.log. Stop it with `kill PID`.
# Installs Debian's openssh-server with apt-get when sshd is missing (root only).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
dir=$(mkdir -p "$1" && cd "$1" && pwd)
port=$2
case $port in
  ''|*[!0-9]*) echo "$0: PORT must be a number in 1..65535, got '$port'" >&2; exit 2 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
  echo "$0: PORT must be in 1..65535, got $port" >&2
  exit 2
fi

sshd=$(command -v sshd || true)
[ -n "$sshd" ] || { [ -x /usr/sbin/sshd ] && sshd=/usr/sbin/sshd; } || true
if [ -z "$sshd" ] || ! command -v ssh-keygen >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing openssh-server with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2 && apt-get install -y --no-install-recommends openssh-server openssh-client >&2
    sshd=/usr/sbin/sshd
  else
    echo "$0: sshd not found and cannot install openssh-server (need root and apt-get)" >&2
    exit 3
  fi
fi

# sshd refuses to start without its privilege-separation directory.
if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd; fi

rm -f "$dir/ssh_host_ed25519_key" "$dir/ssh_host_ed25519_key.pub" "$dir/id_ed25519" "$dir/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C edgekd-test-host -f "$dir/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C edgekd-test-client -f "$dir/id_ed25519"
cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys" "$dir/id_ed25519" "$dir/ssh_host_ed25519_key"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" > "$dir/known_hosts"

cat > "$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_ed25519_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF

rm -f "$dir/sshd.pid"
"$sshd" -t -f "$dir/sshd_config"
"$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"
# sshd daemonizes; its pid file appears once it listens.
for _ in $(seq 100); do
  if [ -s "$dir/sshd.pid" ]; then
    cat "$dir/sshd.pid"
    exit 0
  fi
  sleep 0.05
done
echo "$0: sshd did not start; see $dir/sshd.log" >&2
tail -n 5 "$dir/sshd.log" >&2 || true
exit 1
