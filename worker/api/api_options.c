/* helmq-api's options and its --help text (api_options.h). */
#include "api_options.h"

#include "kafka.h"

const config_opt_t api_opts[] = {
    {"listen", 'l', "HELMQ_API_LISTEN", CONFIG_STRING, "127.0.0.1:8080", "address:port to serve HTTP on"},
    {"tokens-file", 0, "HELMQ_API_TOKENS", CONFIG_STRING, NULL,
     "bearer tokens, one per line: TOKEN PRINCIPAL (TENANT_UUID | admin) (required)"},
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI"},
    {"db-connections", 0, "HELMQ_API_DB_CONNECTIONS", CONFIG_INT, "4",
     "PostgreSQL connections; a query goes to the least busy"},
    {"db-timeout-ms", 0, "HELMQ_API_DB_TIMEOUT_MS", CONFIG_INT, "5000",
     "a request waits this long for PostgreSQL, then gets 503 (at once when no connection is up)"},
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"commands-topic", 0, "HELMQ_COMMANDS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_COMMANDS,
     "topic commands are published to"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS,
     "topic the event streams (.../events) read"},
    {"max-streams", 0, "HELMQ_API_MAX_STREAMS", CONFIG_INT, "64",
     "event streams open at once (each has its own Kafka consumer; 503 with Retry-After beyond)"},
    {"stream-max-buffer", 0, "HELMQ_API_STREAM_MAX_BUFFER", CONFIG_INT, "1048576",
     "an event stream stops reading at this many unsent bytes, and is cut when its reader leaves them there "
     "for 1 s"},
    {"stream-heartbeat-ms", 0, "HELMQ_API_STREAM_HEARTBEAT_MS", CONFIG_INT, "15000",
     "an event stream gets the comment \": keepalive\" this often, for proxies"},
    {"max-body", 0, "HELMQ_API_MAX_BODY", CONFIG_INT, "1048576",
     "largest request body accepted (bytes; 413 beyond)"},
    {"max-header-bytes", 0, "HELMQ_API_MAX_HEADER_BYTES", CONFIG_INT, "16384",
     "largest request head: its URL, header names and values (bytes; 431 beyond; a URL over 8192: 414)"},
    {"request-timeout-ms", 0, "HELMQ_API_REQUEST_TIMEOUT_MS", CONFIG_INT, "10000",
     "a request not received whole this long after its first byte gets 408; an idle connection, or one "
     "whose client reads none of its answer for this long, is closed"},
    {"max-connections", 0, "HELMQ_API_MAX_CONNECTIONS", CONFIG_INT, "0",
     "open connections; at the limit a new one closes the one idle longest (0: the open-file limit less 64)"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

void api_usage(FILE *out) {
    fprintf(out,
            "Usage: helmq-api [OPTIONS]\n\n"
            "Serves the seed's REST API:\n"
            "  GET    " PREFIX "[?limit=]              the releases the token sees (admin: all)\n"
            "  GET    " PREFIX "/:releaseId            a release\n"
            "  GET    " PREFIX "/tenant/:tenantId      a tenant's releases\n"
            "  GET    " PREFIX "/:releaseId/history    its revision history, by revision, a page at a\n"
            "         time: ?limit= (default 100, at most 1000), ?after=REVISION; Link: rel=\"next\"\n"
            "  GET    " PREFIX "/summary[?tenantId=]   counts by status and chart, and by both (admin)\n"
            "  GET    " PREFIX "/events                live events, Server-Sent Events (admin: ?tenantId=)\n"
            "  GET    " PREFIX "/tenant/:tenantId/events  a tenant's live events\n"
            "  GET    " PREFIX "/:releaseId/events     a release's live events\n"
            "         (from the topic's end, or ?since=beginning; Last-Event-ID or ?lastEventId= resumes)\n"
            "  POST   " PREFIX "                       install (the seed's body) -> 202\n"
            "  DELETE " PREFIX "/:releaseId?reason=... uninstall -> 202\n"
            "  GET    " NS_PREFIX "/:namespace          its owner (tenant) and live releases\n"
            "  GET    " NS_PREFIX "[?tenantId=]         the namespaces a tenant owns\n"
            "  GET    /healthz, /metrics (Prometheus), /openapi.json (this API's OpenAPI 3.1 document)\n"
            "  GET    /, /static/:file                           the status page (HTML, CSS, JS; no token)\n"
            "Authorization: Bearer TOKEN (see --tokens-file).\n\nOptions:\n");
    config_usage(api_opts, out);
}
