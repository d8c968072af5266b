#!/bin/sh
# Run FreeTDS tsql once: log in, SELECT 1, exit. Prints ONE JSON line (the client's view).
# Usage: run_tsql.sh JSON   (host, port, user, password, database, encrypt, login_only,
#        readonly, timeout, workdir)
set -u
json="$1"
get() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]) or "")' "$json" "$1"; }
host=$(get host); port=$(get port); user=$(get user); pass=$(get password); db=$(get database)
enc=$(get encrypt); timeout=$(get timeout); dir=$(get workdir); tdsv=$(get tds_version)
login_only=$(get login_only); readonly=$(get readonly)
case "$enc" in off) fenc=off ;; strict) fenc=strict ;; *) fenc=require ;; esac
# "request" sends ENCRYPT_OFF: login-only encryption when the server agrees
[ "$enc" = off ] && [ "$login_only" = True ] && fenc=request
intent=no; [ "$readonly" = True ] && intent=yes
conf="$dir/freetds.conf"
cat > "$conf" <<CONF
[global]
	tds version = ${tdsv:-7.4}
	encryption = $fenc
	login timeout = $timeout
	timeout = $timeout
	read-only intent = $intent
CONF
start=$(date +%s.%N)
# tsql -H takes the version from TDSVER, not from freetds.conf's [global].
out=$(printf 'SELECT 1\ngo\nexit\n' | TDSVER="${tdsv:-7.4}" FREETDSCONF="$conf" timeout $((timeout + 20)) \
      tsql -H "$host" -p "$port" -U "$user" -P "$pass" -D "$db" -o q 2>&1)
rc=$?
end=$(date +%s.%N)
ver=$(dpkg-query -W -f='${Version}' freetds-bin 2>/dev/null || echo '?')
python3 - "$rc" "$out" "$start" "$end" "$ver" <<'PY'
import json, sys
rc, out, start, end, ver = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
lines = [l.strip() for l in out.splitlines() if l.strip()]
ok = rc == "0" and "1" in lines and not any("error" in l.lower() for l in lines)
res = {"driver": "tsql", "version": ver, "ok": ok, "elapsed": round(end - start, 3), "exit": int(rc)}
if ok:
    res["rows"] = [[1]]
else:
    res["error"] = " | ".join(lines)[-600:]
print(json.dumps(res))
PY
