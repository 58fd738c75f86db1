/* A rebuild of the projection from the events topic: its start (the
 * projection emptied by helmq.rebuild_begin, every partition assigned from
 * the beginning) and its end (helmq.rebuild_finish deletes the parked rows of
 * records applied this time, sql/0002). The replay itself is the consumer's
 * ordinary loop (consumer.c). */
#include "projector.h"

#include "log.h"

#include <stdio.h>
#include <string.h>

int rebuild_begin(PGconn *db, char *began, size_t began_size) {
    PGresult *r = PQexec(db, "SELECT helmq.rebuild_begin()");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (!ok)
        log_error("emptying the projection: %s", PQresultErrorMessage(r));
    else
        snprintf(began, began_size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok ? 0 : -1;
}

/* Assigns every partition of topic from the beginning (for rebuild). */
int rebuild_assign(rd_kafka_t *rk, const char *topic, int *nparts, char *errstr, size_t errstr_size) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(errstr, errstr_size, "no metadata for %s: %s", topic,
                 err ? rd_kafka_err2str(err) : rd_kafka_err2str(md->topics[0].err));
        if (md)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    *nparts = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(*nparts);
    for (int i = 0; i < *nparts; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return 0;
}

void rebuild_finish(PGconn *db, const char *topic, const char *began) {
    /* Parked rows the replay did not park again are obsolete: their
     * records were applied this time. */
    const char *params[] = {topic, began};
    PGresult *r = PQexecParams(db, "SELECT helmq.rebuild_finish($1, $2)", 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        if (strcmp(PQgetvalue(r, 0, 0), "0") != 0)
            log_info("rebuild: %s records parked before are applied now; their rows in helmq.parked_events "
                     "are deleted",
                     PQgetvalue(r, 0, 0));
    } else {
        log_error("rebuild: deleting the obsolete rows of helmq.parked_events: %s (they stay; the "
                  "projection is complete)",
                  PQresultErrorMessage(r));
    }
    PQclear(r);
}
