/* helmq-api's bearer tokens: the tokens file (one line per token: TOKEN
 * PRINCIPAL (TENANT_UUID | admin)), loaded once at start, and the lookup of
 * a request's Authorization header among them. A token maps to a principal
 * (recorded as performedBy) and either a tenant or the admin role. */
#ifndef HELMQ_API_TOKENS_H
#define HELMQ_API_TOKENS_H

#include "api_command.h"
#include "util.h"

#include <stddef.h>

typedef struct api_token {
    char *token, *principal;
    char tenant[UUID_STR_LEN]; /* "" for admin */
    int admin;
} api_token_t;

/* The tokens of one file; owns every string in v. Zero it before loading. */
typedef struct api_tokens {
    api_token_t *v;
    int n;
} api_tokens_t;

/* Appends the tokens of the file at path to t. Returns 0, or -1 with errstr
 * filled (the file cannot be read, a line is malformed or its token shorter
 * than 16 characters, or the file holds no token); t is then released by
 * api_tokens_free as on success. */
int api_tokens_load(api_tokens_t *t, const char *path, char *errstr, size_t errstr_size);

/* Frees what t owns and zeroes it. Accepts an empty or NULL t. */
void api_tokens_free(api_tokens_t *t);

/* The token of authorization, the request's Authorization header value
 * ("Bearer TOKEN", the scheme in any case; NULL when the request had none),
 * or NULL when it names no token of t. Borrowed from t. Compares in
 * constant time, so timing does not reveal a token's prefix. */
const api_token_t *api_tokens_authenticate(const api_tokens_t *t, const char *authorization);

/* The tenant tok is scoped to, or NULL for the admin role (every tenant). */
const char *api_token_tenant(const api_token_t *tok);

/* The caller of a command sent with tok (performedBy, tenant). */
api_caller_t api_token_caller(const api_token_t *tok);

#endif
