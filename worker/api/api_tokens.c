/* helmq-api's bearer tokens: loading the tokens file and authenticating a
 * request's Authorization header. See api_tokens.h. */
#include "api_tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int api_tokens_load(api_tokens_t *t, const char *path, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "cannot open the tokens file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        char tok[512], who[256], role[128];
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        int n = sscanf(line, "%511s %255s %127s", tok, who, role);
        if (n <= 0)
            continue;
        if (n != 3 || (strcmp(role, "admin") != 0 && !uuid_valid(role)) || strlen(tok) < 16) {
            snprintf(errstr, errstr_size,
                     "%s:%d: expected TOKEN PRINCIPAL (TENANT_UUID|admin), token of 16+ characters", path,
                     lineno);
            fclose(f);
            return -1;
        }
        t->v = realloc(t->v, sizeof(api_token_t) * (size_t)(t->n + 1));
        api_token_t *e = &t->v[t->n++];
        memset(e, 0, sizeof(*e));
        e->token = strdup(tok);
        e->principal = strdup(who);
        e->admin = strcmp(role, "admin") == 0;
        if (!e->admin)
            snprintf(e->tenant, sizeof(e->tenant), "%s", role);
    }
    fclose(f);
    if (t->n == 0) {
        snprintf(errstr, errstr_size, "%s holds no tokens", path);
        return -1;
    }
    return 0;
}

void api_tokens_free(api_tokens_t *t) {
    if (!t)
        return;
    for (int i = 0; i < t->n; i++) {
        free(t->v[i].token);
        free(t->v[i].principal);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

/* Constant-time comparison, so timing does not reveal a token's prefix. */
static int token_eq(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la && i < lb; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

const api_token_t *api_tokens_authenticate(const api_tokens_t *t, const char *authorization) {
    const char *h = authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    const char *given = h + 7;
    const api_token_t *found = NULL;
    for (int i = 0; i < t->n; i++)
        if (token_eq(t->v[i].token, given))
            found = &t->v[i];
    return found;
}

const char *api_token_tenant(const api_token_t *tok) {
    return tok->admin ? NULL : tok->tenant;
}

api_caller_t api_token_caller(const api_token_t *tok) {
    api_caller_t who = {tok->principal, api_token_tenant(tok)};
    return who;
}
