/* helmq-api's options (config.h) and its --help text, which lists the routes. */
#ifndef HELMQ_API_OPTIONS_H
#define HELMQ_API_OPTIONS_H

#include "config.h"

#include <stdio.h>

#define PREFIX "/api/v1/helm/releases"
#define NS_PREFIX "/api/v1/helm/namespaces"

extern const config_opt_t api_opts[];

/* Prints the usage: the routes, then every option. */
void api_usage(FILE *out);

#endif
