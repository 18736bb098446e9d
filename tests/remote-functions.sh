# SPDX-License-Identifier: BSD-3-Clause
# For the remote-image tests: nginx serving a directory on 127.0.0.1.

# free_port: a TCP port nothing listens on now.
free_port ()
{
  $PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nginx_start ROOT [DIRECTIVES]: serve ROOT (symbolic links followed) on
# a free port of 127.0.0.1 with a private configuration in $tmp/nginx,
# DIRECTIVES added to its server block; one process, its pid in
# nginx_pid, stopped at exit.  Sets http (the base URL).
# $tmp/nginx/access.log has one line per request: method, URI, status
# and bytes sent.
nginx_start ()
{
  local root=$1 directives=${2-} port
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
    $directives
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

# s3_start: s3rver (npm, in build/npm) with bucket bkt and its data in
# $tmp/s3, behind tests/s3-verify-proxy.py, which checks every request's
# Signature V4 (s3rver does not) with the key S3RVER:S3RVER; both on
# 127.0.0.1, stopped at exit.  Sets s3_port (the proxy's) and the AWS
# variables for it (path style).  While $tmp/s3-hold exists, part
# uploads wait; $tmp/s3-hold.held says one does.  If $tmp/s3-fail
# exists, the next upload of part 2 fails with 503 SlowDown.
# $tmp/s3-proxy.log has one line per request.
s3_start ()
{
  local s3rver=$top_srcdir/build/npm/node_modules/.bin/s3rver port
  requires node
  [ -x "$s3rver" ] ||
    skip "s3rver is not installed (scripts/setup installs it with npm into build/npm)"
  $PYTHON -c 'import botocore' 2>/dev/null ||
    skip "python3-botocore is not installed"
  port=$(free_port)
  "$s3rver" -d "$tmp/s3" -a 127.0.0.1 -p "$port" --service-endpoint localhost \
    --configure-bucket bkt >"$tmp/s3rver.log" 2>&1 &
  s3rver_pid=$!
  on_exit s3_stop
  echo "S3RVER S3RVER" > "$tmp/s3-keys"
  $PYTHON "$top_srcdir/tests/s3-verify-proxy.py" "$tmp/s3-port" \
    "http://127.0.0.1:$port" "$tmp/s3-keys" "$tmp/s3" \
    2>"$tmp/s3-proxy.log" &
  s3proxy_pid=$!
  for _ in $(seq 200); do
    grep -q "listening" "$tmp/s3rver.log" && [ -s "$tmp/s3-port" ] && break
    [ -d "/proc/$s3rver_pid" ] && [ -d "/proc/$s3proxy_pid" ] || break
    sleep 0.05
  done
  grep -q "listening" "$tmp/s3rver.log" ||
    { cat "$tmp/s3rver.log" >&2; fail "s3rver did not start"; }
  [ -s "$tmp/s3-port" ] ||
    { cat "$tmp/s3-proxy.log" >&2; fail "s3-verify-proxy.py did not start"; }
  s3_port=$(cat "$tmp/s3-port")
  export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port
  export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
  unset AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_PROFILE AWS_S3_FORCE_PATH_STYLE
  export AWS_SHARED_CREDENTIALS_FILE=$tmp/credentials
}

s3_stop ()
{
  local pid
  for pid in ${s3proxy_pid:-} ${s3rver_pid:-}; do
    kill "$pid" 2>/dev/null || :
    wait "$pid" 2>/dev/null || :
  done
  s3proxy_pid= s3rver_pid=
}

# s3_put FILE KEY: upload FILE as s3://bkt/KEY, signed.
s3_put ()
{
  curl -sSf --aws-sigv4 aws:amz:us-east-1:s3 -u S3RVER:S3RVER \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -T "$1" \
    "$AWS_ENDPOINT_URL/bkt/$2" || fail "uploading $2 failed"
}
