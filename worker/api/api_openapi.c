/* The OpenAPI document, as built into helmq-api; see api_openapi.h. */
#include "api_openapi.h"

#include "embedded.h"

#include <string.h>

/* build/openapi_gen.c: docs/openapi.json, the only description of the API. */
extern const embedded_file_t openapi_sources[];

void api_openapi(http_req_t *req) {
    const char *doc = openapi_sources[0].text;
    httpd_respond(req, 200, "application/json", doc, strlen(doc));
}
