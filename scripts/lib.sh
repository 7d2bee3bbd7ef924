# Shared by scripts/test and scripts/demo.
ensure_venv() {
    local reqs=$1 stamp=.venv/.installed-$1
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ ! -f "$stamp" ] || [ "$reqs" -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ]; then
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -r "$reqs"
        touch "$stamp"
    fi
}

redis_answers() {
    python3 - "$1" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
try:
    s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=1)
    s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}
