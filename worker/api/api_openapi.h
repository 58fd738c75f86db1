/* GET /openapi.json: helmq-api's OpenAPI 3.1 document, docs/openapi.json,
 * built into the program (tests/lib/embed.sh, build/openapi_gen.c). */
#ifndef HELMQ_API_OPENAPI_H
#define HELMQ_API_OPENAPI_H

#include "httpd.h"

/* Answers req with the document (200, application/json). */
void api_openapi(http_req_t *req);

#endif
