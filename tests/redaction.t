#!/usr/bin/env bash
# Values redaction is deny-by-default: in events, the projection and the
# ledger every string is "[REDACTED]" unless its key is on the allowlist
# (--values-allow-keys), and even then when it looks like a secret; a
# secret-looking key (--redact-keys) hides its whole value, numbers too. A
# corpus of secret shapes, each holding "RAW", must leave no trace.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 2
worker_start --concurrency 2
projector_start
NS=redact-ns
R='"[REDACTED]"'
JWT='eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJSQVctand0In0.RAWsig_0123456789abcdef'
PEM='-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEARAWpem\n-----END RSA PRIVATE KEY-----'
VALUES=$(jq -nc --arg jwt "$JWT" --arg pem "$PEM" '{
  passwd: "RAW-passwd", pwd: "RAW-pwd", PASSWORD: "RAW-upper", dbPassWord: "RAW-camel",
  password: 424242, apiKey: {nested: "RAW-nested", n: 7},
  database: {url: "postgres://app:RAW-url@db.internal:5432/app", host: "db.internal", port: 5432,
             dsn2: "host=db user=app password=RAW-dsn-kv sslmode=require"},
  host: "app:RAW-host-dsn@db:5432", name: "https://deploy:RAW-name-url@git.example/repo.git",
  image: {repository: "registry.example/team/app", tag: "1.2.3", pullPolicy: "IfNotPresent"},
  tag: "AKIARAW0ABCDEFGHIJKL", Image: $jwt,
  jwt: $jwt, bearer: "Bearer RAW-bearer", tls: {crt: $pem}, version: $pem,
  aws: {accessKeyId: "AKIARAW0ABCDEFGHIJKL", region: "eu-west-1"},
  env: [{name: "DB_PASS", value: "RAW-env"}, {name: "LOG_FORMAT", value: "RAW-plain-env"}],
  hosts: ["a.example", "user:RAW-arr@b.example"], path: "/healthz?token=RAW-query",
  note: "a plain RAW-note", replicaCount: 3, enabled: true, ratio: 0.5, nothing: null
}')
id=$(send install app -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --set-values "$VALUES")
ev=$(wait_terminal "$id" 120)
is "$(jf .eventType <<<"$ev")" succeeded "an install whose values hold a corpus of secret shapes"
red=$(jf .valuesRedacted <<<"$ev")
diag "valuesRedacted: $red"
shown() { jq -c "$1" <<<"$red"; } # shown JQ_PATH: the redacted copy's value there
check() { is "$(shown "$1")" "$2" "$3"; }
check .passwd "$R" "passwd is redacted"
check .pwd "$R" "pwd is redacted"
check .PASSWORD "$R" "PASSWORD (upper case) is redacted"
check .dbPassWord "$R" "dbPassWord (mixed case) is redacted"
check .password "$R" "a number under a secret key (password) is redacted"
check .apiKey "$R" "an object under a secret key (apiKey) is redacted whole"
check .database.url "$R" "a URL with user information (postgres://user:pass@host) is redacted"
check .database.dsn2 "$R" "a libpq DSN with password= is redacted (and its key is not on the allowlist)"
check .host "$R" "an allowlisted key (host) holding user:pass@host is redacted"
check .name "$R" "an allowlisted key (name) holding a URL with user information is redacted"
check .tag "$R" "an allowlisted key (tag) holding an AWS access key id is redacted"
check .Image "$R" "an allowlisted key in another case (Image) holding a JWT is redacted"
check .jwt "$R" "a JWT is redacted"
check .bearer "$R" "a bearer token is redacted"
check .tls.crt "$R" "a PEM private key is redacted"
check .version "$R" "an allowlisted key (version) holding a PEM private key is redacted"
check .aws.accessKeyId "$R" "an AWS access key id is redacted"
check '.env[0].value' "$R" "a value in an array of objects is redacted"
check '.env[1].value' "$R" "any string whose key is not on the allowlist is redacted (deny by default)"
check .note "$R" "free text (note) is redacted"
check '.hosts[1]' "$R" "an array element with user:pass@ is redacted"
check .path "$R" "an allowlisted path holding token= is redacted"
check '.env[0].name' '"DB_PASS"' "an allowlisted key (name) stays visible"
check .database.host '"db.internal"' "host stays visible"
check '.hosts[0]' '"a.example"' "an allowlisted array's plain elements stay visible"
check .image '{"pullPolicy":"IfNotPresent","repository":"registry.example/team/app","tag":"1.2.3"}' \
    "image.repository, tag and pullPolicy stay visible"
check .aws.region '"eu-west-1"' "region stays visible"
check '[.replicaCount, .enabled, .ratio, .nothing, .database.port]' '[3,true,0.5,null,5432]' \
    "numbers, booleans and null stay visible"
is "$(jf '.valuesDigest | length' <<<"$ev")" 64 "the digest is still there"

wait_projected "$id" 120
ok $? "the event is projected"
kcat -b "$HELMQ_BROKERS" -C -t helm.release.events -e -q >"$T/events.raw" 2>/dev/null
is "$(grep -ac 'RAW' "$T/events.raw")" 0 "no secret of the corpus on the events topic"
pg_dump -h "$PGHOST" -p "$PGPORT" -U postgres -d helmq --schema=helmq --schema=helmq_worker >"$T/dump.sql" 2>"$T/dump.err"
ok $? "pg_dump of the projection and the ledger"
is "$(grep -c 'RAW' "$T/dump.sql")" 0 "no secret of the corpus in the projection or the ledger"
grep -q 'db.internal' "$T/dump.sql"
ok $? "control: the visible values are in the projection"
is "$(psql_q "select values_redacted::json->>'note' from helmq.releases where release_name = 'app'")" "[REDACTED]" \
    "the projection's release row holds the redacted copy"
is "$(cat "$T"/worker.*.log "$T/projector.log" | grep -c 'RAW')" 0 "no secret of the corpus in the logs"

# The allowlist is configurable: a worker allowing note (and no longer tag).
worker_stop
worker_start --concurrency 2 --values-allow-keys "note,replicaCount"
id=$(send upgrade app -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 \
    --set-values '{"note":"visible text","tag":"1.2.4","pwdNote":"x","replicaCount":"four"}')
red=$(wait_terminal "$id" 120 | jf .valuesRedacted)
check . "{\"note\":\"visible text\",\"pwdNote\":$R,\"replicaCount\":\"four\",\"tag\":$R}" \
    "--values-allow-keys note,replicaCount: those shown, tag no longer, a secret-looking key (pwd) never"
HELMQ_VALUES_ALLOW_KEYS=tag "$HELMQ_BIN/helmq-worker" --help >"$T/help.txt" 2>&1
like "$(cat "$T/help.txt")" "HELMQ_VALUES_ALLOW_KEYS" "--help names HELMQ_VALUES_ALLOW_KEYS"
worker_stop
is "$?" 0 "SIGTERM: the worker exits 0"
done_testing
