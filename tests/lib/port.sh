# tests/lib/port.sh: free_port prints a TCP port on 127.0.0.1 that nothing
# listens on, taken below the kernel's ephemeral range (32768-60999 by
# default), where outgoing connections (Kafka, PostgreSQL, curl) take their
# local ports: a random port inside that range can be held by one of them,
# and a listen on it then fails with "address already in use".
free_port() {
    local lo=20000 hi p i
    hi=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
    [ -n "$hi" ] && [ "$hi" -gt $((lo + 1000)) ] || hi=32768
    for i in $(seq 1 100); do
        p=$((lo + RANDOM % (hi - lo)))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # something listens there
        echo "$p"
        return 0
    done
    echo "free_port: no free port found in $lo-$hi" >&2
    return 1
}
