#!/usr/bin/env bash
# Service identification on real daemons from Debian's packages: `porthawk scan --identify`
# beside `nmap -sV -Pn -n` on the same ports, in one run.
#
# Each daemon runs in the foreground as a child of this script, with a throwaway configuration
# in a temporary directory, on a free high port of 127.0.0.1 (so no port hint helps either
# scanner: every probe order is the generic one). Daemons that are not installed are left out
# (and said so). The script prints one row per port (service / product / version of each
# scanner) and the totals: services named, versions named, wall time. It stops what it
# started, by pid, when it ends.
#
# Needs root (several daemons switch to their own users). Usage:
#   benches/identify_daemons.sh                 # builds porthawk --release first
#   PORTHAWK=path/to/porthawk benches/identify_daemons.sh
# Options of porthawk's run: PH_ARGS (default below). DAEMONS: a subset, by the names of the
# start_* functions (`DAEMONS="etcd dockerd"`).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PORTHAWK:-}" ]; then
  cargo build --release -p porthawk-cli >/dev/null || exit 1
  PORTHAWK=${CARGO_TARGET_DIR:-target}/release/porthawk
fi
PH_ARGS=${PH_ARGS:---max-probes 30 --read-timeout 500ms --dialog-timeout 20s}
IP=127.0.0.1
DIR=$(mktemp -d /tmp/identify-daemons.XXXXXX)
chmod 755 "$DIR"
PIDS=()
ROWS=()
export PATH="$PATH:/usr/sbin:/sbin"

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

have() {
  for p in "$@"; do
    command -v "$p" >/dev/null || { echo "left out: $p is not installed" >&2; return 1; }
  done
}

# run NAME PORT CMD...: starts CMD in the background, in a session of its own (some daemons
# signal their whole process group when they stop), with its output in NAME.log. PORT `-`: a
# helper, not a row of the table.
run() {
  local name=$1 port=$2
  shift 2
  setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  PIDS+=($!)
  [ "$port" = - ] || ROWS+=("$name $port")
}

# A directory of the daemon's own, readable by the users daemons switch to.
dir() {
  mkdir -p "$DIR/$1"
  chmod 755 "$DIR/$1"
  echo "$DIR/$1"
}

# --- the daemons ------------------------------------------------------------------------------

start_pgbouncer() {
  have pgbouncer || return
  local p d
  p=$(free_port) d=$(dir pgbouncer)
  printf '[databases]\nx = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = %s\nlisten_port = %s\nauth_type = any\nunix_socket_dir =\nlogfile = %s/pgbouncer.log\npidfile = %s/pgbouncer.pid\n' \
    "$IP" "$p" "$d" "$d" >"$d/pgbouncer.ini"
  chown nobody "$d"
  run pgbouncer "$p" setpriv --reuid nobody --regid nogroup --clear-groups -- pgbouncer "$d/pgbouncer.ini"
}

start_memcached() {
  have memcached || return
  local p
  p=$(free_port)
  run memcached "$p" memcached -u nobody -U 0 -l "$IP" -p "$p"
}

start_rsync() {
  have rsync || return
  local p d
  p=$(free_port) d=$(dir rsync)
  printf 'port = %s\naddress = %s\nuse chroot = no\npid file = %s/rsyncd.pid\n[pub]\npath = %s\nread only = yes\n' \
    "$p" "$IP" "$d" "$d" >"$d/rsyncd.conf"
  run rsync "$p" rsync --daemon --no-detach --config "$d/rsyncd.conf"
}

start_mosquitto() {
  have mosquitto || return
  local p d
  p=$(free_port) d=$(dir mosquitto)
  printf 'listener %s %s\nallow_anonymous true\n' "$p" "$IP" >"$d/mosquitto.conf"
  run mosquitto "$p" mosquitto -c "$d/mosquitto.conf"
}

start_vsftpd() {
  have vsftpd || return
  local p d
  p=$(free_port) d=$(dir vsftpd)
  mkdir -p /var/run/vsftpd/empty
  printf 'listen=YES\nlisten_ipv6=NO\nlisten_address=%s\nlisten_port=%s\nbackground=NO\nanonymous_enable=NO\nlocal_enable=YES\npam_service_name=porthawk-none\nsecure_chroot_dir=/var/run/vsftpd/empty\nseccomp_sandbox=NO\n' \
    "$IP" "$p" >"$d/vsftpd.conf"
  run vsftpd "$p" vsftpd "$d/vsftpd.conf"
}

start_squid() {
  have squid || return
  local p d
  p=$(free_port) d=$(dir squid)
  chown proxy "$d"
  printf 'http_port %s:%s\npid_filename %s/squid.pid\ncache_log %s/cache.log\naccess_log none\ncache deny all\ncoredump_dir %s\nhttp_access allow localhost\nhttp_access deny all\n' \
    "$IP" "$p" "$d" "$d" "$d" >"$d/squid.conf"
  run squid "$p" squid -N -f "$d/squid.conf"
}

start_svnserve() {
  have svnserve || return
  local p d
  p=$(free_port) d=$(dir svnserve)
  run svnserve "$p" svnserve -d --foreground --listen-host "$IP" --listen-port "$p" -r "$d"
}

start_nats() {
  have nats-server || return
  local p
  p=$(free_port)
  run nats-server "$p" nats-server -a "$IP" -p "$p"
}

start_named() {
  have named || return
  local p d
  p=$(free_port) d=$(dir named)
  mkdir -p "$d/work"
  chown bind "$d/work"
  printf 'options { directory "%s/work"; listen-on port %s { %s; }; listen-on-v6 { none; }; pid-file none; recursion no; };\n' \
    "$d" "$p" "$IP" >"$d/named.conf"
  chmod 644 "$d/named.conf"
  run named "$p" named -g -u bind -c "$d/named.conf"
}

start_redis() {
  have redis-server || return
  local p
  p=$(free_port)
  run redis-server "$p" redis-server --port "$p" --bind "$IP" --save '' --appendonly no --dir "$(dir redis)"
}

start_ngircd() {
  have ngircd || return
  local p d
  p=$(free_port) d=$(dir ngircd)
  printf '[Global]\nName = irc.identify.test\nInfo = porthawk\nListen = %s\nPorts = %s\nServerGID = nogroup\nServerUID = nobody\nPidFile = %s/ngircd.pid\n[Options]\nPAM = no\nIdent = no\nDNS = no\n' \
    "$IP" "$p" "$d" >"$d/ngircd.conf"
  run ngircd "$p" ngircd -n -f "$d/ngircd.conf"
}

start_lighttpd() {
  have lighttpd || return
  local p d
  p=$(free_port) d=$(dir lighttpd)
  printf 'server.document-root = "%s"\nserver.bind = "%s"\nserver.port = %s\n' "$d" "$IP" "$p" >"$d/lighttpd.conf"
  run lighttpd "$p" lighttpd -D -f "$d/lighttpd.conf"
}

start_haproxy() {
  have haproxy || return
  local p d
  p=$(free_port) d=$(dir haproxy)
  printf 'defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend web\n  bind %s:%s\n  default_backend none\nbackend none\n' \
    "$IP" "$p" >"$d/haproxy.cfg"
  run haproxy "$p" haproxy -db -f "$d/haproxy.cfg"
}

start_tinyproxy() {
  have tinyproxy || return
  local p d
  p=$(free_port) d=$(dir tinyproxy)
  printf 'Port %s\nListen %s\nTimeout 60\nAllow 127.0.0.0/8\nMaxClients 10\n' "$p" "$IP" >"$d/tinyproxy.conf"
  chmod 644 "$d/tinyproxy.conf"
  run tinyproxy "$p" tinyproxy -d -c "$d/tinyproxy.conf"
}

start_git() {
  have git || return
  local p d
  p=$(free_port) d=$(dir git)
  run git-daemon "$p" git daemon --reuseaddr --export-all --listen="$IP" --port="$p" --base-path="$d" "$d"
}

start_slapd() {
  have slapd || return
  local p d
  p=$(free_port) d=$(dir slapd)
  printf 'include /etc/ldap/schema/core.schema\npidfile %s/slapd.pid\nargsfile %s/slapd.args\n' "$d" "$d" >"$d/slapd.conf"
  run slapd "$p" slapd -d 0 -f "$d/slapd.conf" -h "ldap://$IP:$p/"
}

start_mariadb() {
  have mariadbd mariadb-install-db || return
  local p d
  p=$(free_port) d=$(dir mariadb)
  mariadb-install-db --no-defaults --datadir="$d/data" --user=root --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve >"$d/install.log" 2>&1 || { echo "left out: mariadb-install-db failed" >&2; return; }
  run mariadb "$p" mariadbd --no-defaults --datadir="$d/data" --port="$p" --bind-address="$IP" \
    --socket="$d/mysqld.sock" --pid-file="$d/mysqld.pid" --user=root --skip-log-bin --skip-name-resolve \
    --innodb-buffer-pool-size=16M
}

start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] || { echo "left out: postgresql is not installed" >&2; return; }
  local p d
  p=$(free_port) d=$(dir postgres)
  mkdir -p "$d/data" "$d/sockets"
  chown postgres "$d/data" "$d/sockets"
  (cd "$d" && setpriv --reuid postgres --regid postgres --init-groups -- "$bin/initdb" -D "$d/data" \
    --auth=trust -U postgres --no-sync -E UTF8 --locale=C >"$d/initdb.log" 2>&1) ||
    { echo "left out: initdb failed" >&2; return; }
  run postgres "$p" setpriv --reuid postgres --regid postgres --init-groups -- "$bin/postgres" -D "$d/data" \
    -p "$p" -k "$d/sockets" -c "listen_addresses=$IP" -c fsync=off
}

start_sshd() {
  have sshd ssh-keygen || return
  local p d
  p=$(free_port) d=$(dir sshd)
  mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_ed25519"
  printf 'ListenAddress %s:%s\nHostKey %s/host_ed25519\nPidFile none\nUsePAM no\n' "$IP" "$p" "$d" >"$d/sshd_config"
  run sshd "$p" "$(command -v sshd)" -D -e -f "$d/sshd_config"
}

start_dovecot() {
  have dovecot || return
  local imap pop3 d
  imap=$(free_port) pop3=$(free_port) d=$(dir dovecot)
  cat >"$d/dovecot.conf" <<EOF
protocols = imap pop3
listen = $IP
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
ssl = no
passdb {
  driver = static
  args = password=unused
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$d/mail
}
service anvil {
  chroot =
}
service imap-login {
  chroot =
  inet_listener imap {
    port = $imap
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  chroot =
  inet_listener pop3 {
    port = $pop3
  }
  inet_listener pop3s {
    port = 0
  }
}
EOF
  run dovecot-imap "$imap" dovecot -F -c "$d/dovecot.conf"
  ROWS+=("dovecot-pop3 $pop3")
}

start_exim() {
  have exim4 || return
  local p d
  p=$(free_port) d=$(dir exim)
  printf 'primary_hostname = mx.identify.test\nkeep_environment =\nspool_directory = %s/spool\nlog_file_path = %s/exim-%%s.log\npid_file_path = %s/exim.pid\nlocal_interfaces = %s\ndaemon_smtp_ports = %s\nexim_user = root\nexim_group = root\nnever_users =\nacl_smtp_rcpt = refuse\nbegin acl\nrefuse:\n  deny\n' \
    "$d" "$d" "$d" "$IP" "$p" >"$d/exim.conf"
  run exim4 "$p" exim4 -bdf -C "$d/exim.conf"
}

start_prosody() {
  have prosody || return
  local p d
  p=$(free_port) d=$(dir prosody)
  mkdir -p "$d/data"
  cat >"$d/prosody.cfg.lua" <<EOF
run_as_root = true
daemonize = false
pidfile = "$d/prosody.pid"
data_path = "$d/data"
modules_enabled = { "saslauth", "disco" }
modules_disabled = { "s2s" }
c2s_ports = { $p }
c2s_interfaces = { "$IP" }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_direct_tls_ports = { }
c2s_require_encryption = false
log = { { levels = { min = "warn" }, to = "console" } }
VirtualHost "chat.identify.test"
EOF
  run prosody "$p" prosody --config "$d/prosody.cfg.lua"
}

start_nginx() {
  have nginx || return
  local p d
  p=$(free_port) d=$(dir nginx)
  printf 'daemon off;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path %s;\n  proxy_temp_path %s;\n  fastcgi_temp_path %s;\n  uwsgi_temp_path %s;\n  scgi_temp_path %s;\n  server {\n    listen %s:%s;\n    root %s;\n  }\n}\n' \
    "$d" "$d" "$d" "$d" "$d" "$d" "$d" "$IP" "$p" "$d" >"$d/nginx.conf"
  run nginx "$p" nginx -c "$d/nginx.conf" -e "$d/error.log"
}

start_apache() {
  have apache2 || return
  local p d m=/usr/lib/apache2/modules
  p=$(free_port) d=$(dir apache2)
  printf 'ServerRoot %s\nLoadModule mpm_event_module %s/mod_mpm_event.so\nLoadModule authz_core_module %s/mod_authz_core.so\nListen %s:%s\nServerName localhost\nPidFile %s/apache.pid\nErrorLog %s/error.log\nMutex file:%s default\nDocumentRoot %s\nUser www-data\nGroup www-data\n' \
    "$d" "$m" "$m" "$IP" "$p" "$d" "$d" "$d" "$d" >"$d/apache2.conf"
  run apache2 "$p" apache2 -DFOREGROUND -f "$d/apache2.conf"
}

start_smbd() {
  have smbd || return
  local p d
  p=$(free_port) d=$(dir smbd)
  mkdir -p "$d/lock" "$d/state" "$d/cache" "$d/private" "$d/pid" "$d/ncalrpc"
  printf '[global]\nsmb ports = %s\ninterfaces = %s\nbind interfaces only = yes\nlock directory = %s/lock\nstate directory = %s/state\ncache directory = %s/cache\nprivate dir = %s/private\npid directory = %s/pid\nncalrpc dir = %s/ncalrpc\nlog file = %s/log.smbd\ndisable netbios = yes\nserver role = standalone server\n' \
    "$p" "$IP" "$d" "$d" "$d" "$d" "$d" "$d" "$d" >"$d/smb.conf"
  run smbd "$p" smbd --foreground --no-process-group -s "$d/smb.conf"
}

start_xrdp() {
  have xrdp || return
  local p d
  p=$(free_port) d=$(dir xrdp)
  sed -e "s/^port=3389$/port=tcp:\/\/$IP:$p/" /etc/xrdp/xrdp.ini >"$d/xrdp.ini"
  mkdir -p /run/xrdp/sockdir
  run xrdp "$p" xrdp --nodaemon --config "$d/xrdp.ini"
}

start_vnc() {
  have Xvnc || return
  local p x d display
  p=$(free_port) d=$(dir xvnc)
  # A display whose X11 port (6000 + n) is free and unhinted.
  for display in $(seq 37 59); do
    [ -e "/tmp/.X11-unix/X$display" ] || [ -e "/tmp/.X$display-lock" ] || break
  done
  x=$((6000 + display))
  run Xvnc "$p" Xvnc ":$display" -rfbport "$p" -interface "$IP" -SecurityTypes None -listen tcp -ac
  ROWS+=("Xvnc-x11 $x")
}

start_cups() {
  have cupsd || return
  local p d
  p=$(free_port) d=$(dir cups)
  mkdir -p "$d/spool" "$d/cache" "$d/state" "$d/log"
  printf 'Listen %s:%s\nLogLevel warn\nWebInterface no\n<Location />\n  Order allow,deny\n  Allow all\n</Location>\n' "$IP" "$p" >"$d/cupsd.conf"
  printf 'ServerRoot %s\nRequestRoot %s/spool\nCacheDir %s/cache\nStateDir %s/state\nErrorLog %s/log/error_log\nAccessLog %s/log/access_log\nPageLog %s/log/page_log\nTempDir %s/spool\n' \
    "$d" "$d" "$d" "$d" "$d" "$d" "$d" "$d" >"$d/cups-files.conf"
  run cupsd "$p" cupsd -f -c "$d/cupsd.conf" -s "$d/cups-files.conf"
}

start_telnetd() {
  have telnetd systemd-socket-activate || return
  local p
  p=$(free_port)
  run telnetd "$p" systemd-socket-activate --inetd -a -l "$IP:$p" "$(command -v telnetd)"
}

start_rabbitmq() {
  have rabbitmq-server epmd || return
  # The broker's own start script (/usr/sbin/rabbitmq-server would leave it running when
  # stopped).
  local p d epmd
  p=$(free_port) d=$(dir rabbitmq) epmd=$(free_port)
  chown rabbitmq "$d"
  # Erlang's port mapper, in the foreground on a port of its own (rabbitmq-server would
  # otherwise start one as a daemon on 4369 that outlives the broker).
  run epmd - epmd -address "$IP" -port "$epmd"
  run rabbitmq "$p" setpriv --reuid rabbitmq --regid rabbitmq --init-groups -- env HOME="$d" \
    RABBITMQ_NODENAME="phk$p@localhost" RABBITMQ_NODE_IP_ADDRESS="$IP" RABBITMQ_NODE_PORT="$p" \
    RABBITMQ_DIST_PORT="$(free_port)" ERL_EPMD_ADDRESS="$IP" ERL_EPMD_PORT="$epmd" RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" RABBITMQ_CONFIG_FILE="$d/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$d/plugins" \
    RABBITMQ_PID_FILE="$d/pid" /usr/lib/rabbitmq/bin/rabbitmq-server
}

start_kamailio() {
  have kamailio || return
  local p d
  p=$(free_port) d=$(dir kamailio)
  cat >"$d/kamailio.cfg" <<EOF
#!KAMAILIO
listen=tcp:$IP:$p
disable_tcp=no
children=1
tcp_children=1
log_stderror=yes
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
request_route {
  sl_send_reply("200", "OK");
}
EOF
  run kamailio "$p" kamailio -DD -E -f "$d/kamailio.cfg" -P "$d/kamailio.pid" -Y "$d"
}

start_caddy() {
  have caddy || return
  local p d
  p=$(free_port) d=$(dir caddy)
  printf '{\n\tadmin off\n\tauto_https off\n}\n\nhttp://%s:%s {\n\tbind %s\n\trespond "porthawk"\n}\n' \
    "$IP" "$p" "$IP" >"$d/Caddyfile"
  run caddy "$p" env XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" \
    caddy run --adapter caddyfile --config "$d/Caddyfile"
}

start_node_exporter() {
  have prometheus-node-exporter || return
  local p
  p=$(free_port)
  run node-exporter "$p" prometheus-node-exporter --web.listen-address="$IP:$p" \
    --collector.disable-defaults --collector.time
}

start_etcd() {
  have etcd || return
  local p peer d
  p=$(free_port) peer=$(free_port) d=$(dir etcd)
  run etcd "$p" etcd --name porthawk --data-dir "$d/data" --listen-client-urls "http://$IP:$p" \
    --advertise-client-urls "http://$IP:$p" --listen-peer-urls "http://$IP:$peer" \
    --initial-advertise-peer-urls "http://$IP:$peer" --initial-cluster "porthawk=http://$IP:$peer"
}

start_openvpn() {
  have openvpn openssl || return
  [ -e /dev/net/tun ] || { echo "left out: openvpn needs /dev/net/tun" >&2; return; }
  local p d
  p=$(free_port) d=$(dir openvpn)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=porthawk-test -keyout "$d/server.key" -out "$d/server.crt" >"$d/openssl.log" 2>&1 ||
    { echo "left out: openssl req failed" >&2; return; }
  # A server's tun device stays down, without addresses or routes.
  run openvpn "$p" openvpn --mode server --tls-server --proto tcp-server --local "$IP" --lport "$p" \
    --dev tun --topology subnet --ifconfig 10.251.0.1 255.255.255.0 --ifconfig-noexec --route-noexec \
    --dh none --ca "$d/server.crt" --cert "$d/server.crt" --key "$d/server.key"
}

start_zookeeper() {
  have java || return
  local jar=/usr/share/java/zookeeper.jar p d
  [ -f "$jar" ] || { echo "left out: $jar is not installed" >&2; return; }
  p=$(free_port) d=$(dir zookeeper)
  printf 'tickTime=2000\ndataDir=%s/data\nclientPort=%s\nclientPortAddress=%s\n4lw.commands.whitelist=srvr\nadmin.enableServer=false\n' \
    "$d" "$p" "$IP" >"$d/zoo.cfg"
  run zookeeper "$p" java -Xmx64m -cp "$jar" org.apache.zookeeper.server.ZooKeeperServerMain "$d/zoo.cfg"
}

start_leafnode() {
  have leafnode systemd-socket-activate unshare || return
  local p d
  p=$(free_port) d=$(dir leafnode)
  # leafnode reads only /etc/news/leafnode/config: each connection's leafnode runs in a mount
  # namespace of its own with this directory mounted over that one.
  printf 'server = news.porthawk.internal\nexpire = 20\nhostname = news.porthawk.internal\n' >"$d/config"
  run leafnode "$p" systemd-socket-activate --inetd -a -l "$IP:$p" unshare --mount --propagation private \
    sh -c "mount --bind '$d' /etc/news/leafnode && exec '$(command -v leafnode)'"
}

start_rmiregistry() {
  have rmiregistry || return
  local p
  # rmiregistry listens on the wildcard address: a port free there.
  p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])')
  run rmiregistry "$p" rmiregistry -J-Xmx32m -J-XX:+UseSerialGC "$p"
}

start_dockerd() {
  have dockerd containerd runc unshare || return
  local p d
  p=$(free_port) d=$(dir dockerd)
  mkdir -p "$d/data" "$d/exec" "$d/run" "$d/etc"
  echo '{}' >"$d/daemon.json"
  # Its own mount namespace, where /run and /etc/docker are this directory's: dockerd would use
  # a system containerd whose socket is in /run/containerd, and writes its key to /etc/docker.
  # It starts its own containerd under the exec root, and stops it when it stops.
  run dockerd "$p" unshare --mount --propagation private sh -c \
    "mount --bind '$d/run' /run && { [ ! -d /etc/docker ] || mount --bind '$d/etc' /etc/docker; } && exec \"\$@\"" sh \
    dockerd -H "tcp://$IP:$p" -H "unix://$d/docker.sock" --config-file "$d/daemon.json" \
    --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/docker.pid" --iptables=false \
    --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none --userland-proxy=false
}

ALL_DAEMONS="pgbouncer memcached rsync mosquitto vsftpd squid svnserve nats named redis ngircd
  lighttpd haproxy tinyproxy git slapd mariadb postgres sshd dovecot exim prosody nginx apache
  smbd xrdp vnc cups telnetd rabbitmq kamailio caddy node_exporter etcd openvpn zookeeper leafnode
  rmiregistry dockerd"
for daemon in ${DAEMONS:-$ALL_DAEMONS}; do
  "start_$daemon"
done

# Wait until every port accepts a connection (bounded: 90 s in all).
ports=()
for row in "${ROWS[@]}"; do ports+=("${row##* }"); done
deadline=$((SECONDS + 90))
for row in "${ROWS[@]}"; do
  port=${row##* }
  until timeout 1 bash -c ": </dev/tcp/$IP/$port" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "not listening: $row (see below)" >&2
      tail -5 "$DIR/${row%% *}.log" >&2 2>/dev/null
      break
    fi
    sleep 0.3
  done
done
portlist=$(IFS=,; echo "${ports[*]}")

t0=$(date +%s.%N)
# shellcheck disable=SC2086
"$PORTHAWK" scan "$IP" -p "$portlist" --identify $PH_ARGS --format jsonl >"$DIR/porthawk.jsonl" 2>"$DIR/porthawk.err"
t1=$(date +%s.%N)
nmap -sV -Pn -n -p "$portlist" "$IP" -oX "$DIR/nmap.xml" >/dev/null 2>"$DIR/nmap.err"
t2=$(date +%s.%N)

printf '%s\n' "${ROWS[@]}" >"$DIR/rows"
python3 - "$DIR" "$t0" "$t1" "$t2" "$PH_ARGS" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
d, t0, t1, t2, args = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5]
rows = [l.split() for l in open(f"{d}/rows") if l.strip()]
ph = {}
for line in open(f"{d}/porthawk.jsonl"):
    r = json.loads(line)
    ph[r["port"]] = r
nm = {}
for port in ET.parse(f"{d}/nmap.xml").getroot().iter("port"):
    s = port.find("service")
    nm[int(port.get("portid"))] = s.attrib if s is not None else {}
def named(s):
    return s not in (None, "", "unknown", "tcpwrapped") and not s.endswith("?")
dash = lambda v: v if v else "–"
print(f"| daemon | port | porthawk service / product / version | nmap -sV service / product / version |")
print("|---|---|---|---|")
totals = [0, 0, 0, 0]
for name, port in rows:
    port = int(port)
    p = ph.get(port, {})
    n = nm.get(port, {})
    ps, pp, pv = p.get("service"), p.get("product"), p.get("version")
    ns, np, nv = n.get("name"), n.get("product"), n.get("version")
    if n.get("method") == "table":
        ns = None  # a guess from nmap's port table, not an identification
    totals[0] += named(ps); totals[1] += bool(pv) and named(ps)
    totals[2] += named(ns); totals[3] += bool(nv) and named(ns)
    print(f"| {name} | {port} | {dash(ps)} / {dash(pp)} / {dash(pv)} | {dash(ns)} / {dash(np)} / {dash(nv)} |")
print(f"| **total ({len(rows)} ports)** | | **{totals[0]} services, {totals[1]} versions, {t1 - t0:.1f} s** "
      f"| **{totals[2]} services, {totals[3]} versions, {t2 - t1:.1f} s** |")
nmap_version = ET.parse(f"{d}/nmap.xml").getroot().get("version")
print(f"\nporthawk scan --identify {args}; nmap {nmap_version} -sV -Pn -n")
EOF
