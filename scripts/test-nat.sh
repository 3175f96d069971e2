#!/usr/bin/env bash
# A home provider behind a real NAT serves a fleet through the node's relay.
#
# Three network namespaces made here and removed on exit (nothing outside them is touched):
#   home   192.168.77.2/24 ── router (nftables masquerade) ── 203.0.113.2 ── wan 203.0.113.1
#   wan    the node and its relay on 203.0.113.1, a site on 45.0.0.80 that answers the caller's
#          address, and the fleet's curl
# The provider's daemon runs in `home` with a private address. The test shows that nobody in
# `wan` can connect to it, that the relay observes the router's public address 203.0.113.2,
# that the fleet's lease points at the relay and the site sees 203.0.113.2, and that the same
# provider offering any other IP is refused.
#
# Usage: scripts/test-nat.sh [path/to/ipsx]   (needs root: ip netns, nft; installs nftables)
set -euo pipefail
cd "$(dirname "$0")/.."
ipsx=${1:-target/debug/ipsx}
[ -x "$ipsx" ] || cargo build --locked -q -p ipsx-cli
ipsx=$(realpath "$ipsx")
source scripts/apt-pinned.sh
apt_pinned nftables=1.0.6-2+deb12u2 curl=7.88.1-10+deb12u15

tag="ipsx$$"
home="$tag-home" router="$tag-router" wan="$tag-wan"
work=$(mktemp -d)
pids=()
cleanup() {
  # Each pid is the subshell of a backgrounded `in_ns`; its child is the process itself.
  for pid in "${pids[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for ns in "$home" "$router" "$wan"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Polls `command` until it succeeds, at most `seconds`.
wait_until() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- the network ------------------------------------------------------------------------------
for ns in "$home" "$router" "$wan"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
ip link add "$tag-h" type veth peer name "$tag-ri"
ip link add "$tag-ro" type veth peer name "$tag-w"
ip link set "$tag-h" netns "$home"
ip link set "$tag-ri" netns "$router"
ip link set "$tag-ro" netns "$router"
ip link set "$tag-w" netns "$wan"
in_ns "$home" ip addr add 192.168.77.2/24 dev "$tag-h"
in_ns "$home" ip link set "$tag-h" up
in_ns "$home" ip route add default via 192.168.77.1
in_ns "$router" ip addr add 192.168.77.1/24 dev "$tag-ri"
in_ns "$router" ip addr add 203.0.113.2/24 dev "$tag-ro"
in_ns "$router" ip link set "$tag-ri" up
in_ns "$router" ip link set "$tag-ro" up
in_ns "$router" ip route add default via 203.0.113.1
in_ns "$router" sysctl -qw net.ipv4.ip_forward=1
in_ns "$router" nft -f - <<EOF
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "$tag-ro" masquerade
  }
}
EOF
in_ns "$wan" ip addr add 203.0.113.1/24 dev "$tag-w"
in_ns "$wan" ip addr add 45.0.0.80/32 dev lo
in_ns "$wan" ip link set "$tag-w" up
# The wan has no route to 192.168.77.0/24: the home network is private.

# --- the internet side: a site, the node and its relay ----------------------------------------
in_ns "$wan" python3 - >"$work/site.log" 2>&1 <<'EOF' &
import http.server
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("45.0.0.80", 8080), Echo).serve_forever()
EOF
pids+=($!)
in_ns "$wan" "$ipsx" node --listen 203.0.113.1:7700 --data-dir "$work/node" \
  --relay-quic 203.0.113.1:4433 --relay-listen 203.0.113.1:1081 >"$work/node.log" 2>&1 &
pids+=($!)
wait_until 20 grep -q '^listening' "$work/node.log" || fail "the node did not start"
wait_until 10 in_ns "$wan" curl -sf http://45.0.0.80:8080/ || fail "the site did not start"

# --- the home provider behind the NAT ---------------------------------------------------------
echo 59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d >"$work/provider.key"
echo 5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a >"$work/fleet.key"
cat >"$work/provide.toml" <<EOF
node = "http://203.0.113.1:7700"
key_file = "provider.key"
relay = true
data_dir = "provider"
[[offer]]
country = "NL"
protocols = ["socks5", "http", "https"]
price = 1
hours = 1
EOF
in_ns "$home" "$ipsx" provide --config "$work/provide.toml" >"$work/provider.log" 2>&1 &
pids+=($!)
wait_until 20 grep -q '^offer ' "$work/provider.log" || fail "the provider placed no offer"
grep -q 'serving 203.0.113.2 through the relay' "$work/provider.log" \
  || fail "the relay did not observe the router's public address"
echo "ok: the relay observed the NAT's public address 203.0.113.2 and the provider offered it"

# Nobody outside can connect to the home device, neither its private address nor the router's.
if in_ns "$wan" curl -s --connect-timeout 2 -o /dev/null http://192.168.77.2:1080/; then
  fail "the home device took a connection from the wan"
fi
if in_ns "$wan" curl -s --connect-timeout 2 -o /dev/null http://203.0.113.2:1080/; then
  fail "the router forwarded a connection in"
fi
echo "ok: direct connections to the provider fail"

# --- the fleet --------------------------------------------------------------------------------
in_ns "$wan" "$ipsx" lease --node http://203.0.113.1:7700 --key-file "$work/fleet.key" \
  --count 1 --country NL --protocol http,socks5 --duration 60 --max-price 1 --format csv \
  >"$work/lease.csv" 2>"$work/lease.log" &
pids+=($!)
wait_until 20 grep -q '^[0-9]' "$work/lease.csv" || fail "no lease"
IFS=, read -r _deal _status ip _ends socks http < <(grep '^[0-9]' "$work/lease.csv")
[ "$ip" = 203.0.113.2 ] || fail "leased $ip, not the NAT's address"
case "$http" in *@203.0.113.1:1081) ;; *) fail "the endpoint $http is not the relay" ;; esac
for proxy in "$http" "$socks"; do
  # The provider reports ready within a second of the deal; poll until it serves.
  wait_until 15 in_ns "$wan" curl -sf --max-time 5 -x "$proxy" http://45.0.0.80:8080/ \
    || fail "no answer through $proxy"
  seen=$(in_ns "$wan" curl -sS --max-time 5 -x "$proxy" http://45.0.0.80:8080/)
  [ "$seen" = 203.0.113.2 ] || fail "the site saw $seen through ${proxy%%:*}, not 203.0.113.2"
done
echo "ok: through the relay the site sees 203.0.113.2 (HTTP and SOCKS5)"

# --- the same provider offering an IP it does not come from -----------------------------------
if in_ns "$wan" "$ipsx" offer --node http://203.0.113.1:7700 --key-file "$work/provider.key" \
  --ip 203.0.113.99 --country NL --price 1 >"$work/offer.log" 2>&1; then
  fail "an offer for an IP the relay did not observe was placed"
fi
grep -q ip_not_observed "$work/offer.log" || fail "the refusal is not typed: $(cat "$work/offer.log")"
echo "ok: an offer naming any other IP is refused (ip_not_observed)"
echo "NAT test passed"
