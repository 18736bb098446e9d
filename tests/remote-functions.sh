# SPDX-License-Identifier: BSD-3-Clause
# For the remote-image tests: nginx serving a directory on 127.0.0.1.

# free_port: a TCP port nothing listens on now.
free_port ()
{
  $PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nginx_start ROOT: serve ROOT (symbolic links followed) on a free port
# of 127.0.0.1 with a private configuration in $tmp/nginx; one process,
# its pid in nginx_pid, stopped at exit.  Sets http (the base URL).
# $tmp/nginx/access.log has one line per request: method, URI, status
# and bytes sent.
nginx_start ()
{
  local root=$1 port
  export PATH="$PATH:/usr/sbin"
  requires nginx
  mkdir -p "$tmp/nginx"
  port=$(free_port)
  {
    # A root master would serve as "nobody", who cannot read $tmp.
    [ "$(id -u)" != 0 ] || echo "user root;"
    cat <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $tmp/nginx/error.log;
pid $tmp/nginx/nginx.pid;
events { worker_connections 64; }
http {
  log_format bytes '\$request_method \$uri \$status \$bytes_sent';
  access_log $tmp/nginx/access.log bytes;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port;
    root $root;
    location = /redirect.qcow2 { return 302 /images/qcow2/v3-c64k.qcow2; }
  }
}
EOF
  } > "$tmp/nginx/nginx.conf"
  nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>>"$tmp/nginx/stderr" &
  nginx_pid=$!
  on_exit nginx_stop
  http=http://127.0.0.1:$port
  for _ in $(seq 100); do
    curl -s -o /dev/null -I "$http/" 2>/dev/null && return 0
    [ -d "/proc/$nginx_pid" ] || break
    sleep 0.05
  done
  cat "$tmp/nginx/stderr" "$tmp/nginx/error.log" >&2 2>/dev/null
  fail "nginx did not start"
}

nginx_stop ()
{
  [ -n "${nginx_pid:-}" ] || return 0
  kill -CONT "$nginx_pid" 2>/dev/null || :
  kill "$nginx_pid" 2>/dev/null || :
  wait "$nginx_pid" 2>/dev/null || :
  nginx_pid=
}

# nginx_bytes URI: bytes nginx sent for requests of URI so far.
nginx_bytes ()
{
  awk -v uri="$1" '$2 == uri { n += $4 } END { print n + 0 }' \
    "$tmp/nginx/access.log"
}

# $nbd_read URI LENGTH OFFSET: one read from an NBD server, checked for
# its length; fails if the server fails it.  A command, for nbdkit --run.
cat > "$tmp/nbd-read.py" <<'EOF'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert len(h.pread(int(sys.argv[2]), int(sys.argv[3]))) == int(sys.argv[2])
EOF
nbd_read="$PYTHON $tmp/nbd-read.py"
