/* conf.h - sandbox YAML config files (--conf and its scoped variants) and the global
 * $CAPSA_HOME/config.json, turned into one seed SandboxSpec.
 *
 * Theory of operation. Each YAML file is read with libyaml's event parser (never its loader)
 * into a small node tree with line/column marks; strictness rules (one document, no anchors,
 * aliases, tags, merge keys or duplicate keys, no bare yes/no/on/off booleans) are enforced
 * there. The tree is then converted, field by field, into a "conf document": JSON shaped like
 * the YAML schema but with normalized values (sizes in MiB, durations in seconds, absolute host
 * paths, seed enum spellings, mounts/patches/rlimits already as seed objects). Every value
 * error is reported as "FILE:LINE:COL: path.to.field: message"; seed-level checks of single
 * values reuse the spec module so the rules are the same as for JSON specs.
 *
 * Precedence, low to high: built-in defaults (filled in by the spec module) -> config.json
 * sandbox_defaults -> each file, left to right -> cli_overrides. Between files: scalars
 * replace, maps merge by key (env, labels, init, network.dns, network.tls, secrets, scripts),
 * a higher list replaces a lower list. The merged conf document is translated into a partial
 * SandboxSpec, merged over the defaults and under cli_overrides, and checked/normalized by
 * capsa_spec_check("SandboxSpec"). See docs/config.md.
 */
#ifndef CAPSA_CONF_H
#define CAPSA_CONF_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "capsa.h"
#include "spec/spec.h"

/* Errors are "FILE:LINE:COL: path: message" strings (or "sandbox spec: path: message" for a
 * problem no file can be blamed for); same container and limits as the spec module's.
 * Zero-initialize; free with capsa_conf_errors_free. */
typedef capsa_spec_errors capsa_conf_errors;

static inline void capsa_conf_errors_free(capsa_conf_errors *errs)
{
    capsa_spec_errors_free(errs);
}

/* First error (plus "(and N more)") into err with code EINVAL; returns -1. */
int capsa_conf_errors_to_err(const capsa_conf_errors *errs, capsa_err *err);

/* Which shape a file has: the root shape (--conf) or one of the scoped, unwrapped shapes. */
enum capsa_conf_kind {
    CAPSA_CONF_ROOT,     /* --conf: the whole schema */
    CAPSA_CONF_NET,      /* --net-conf: policy, allow, deny, ports, dns, tls, trust_host_cas,
                            max_connections */
    CAPSA_CONF_RESOURCE, /* --resource-conf: cpus, memory, max_duration, idle_timeout, rlimits */
    CAPSA_CONF_RUNTIME,  /* --runtime-conf: workdir, shell, user, hostname, security,
                            entrypoint, cmd, env, labels, init */
    CAPSA_CONF_FS,       /* --fs-conf: mounts, patch_files, patches */
    CAPSA_CONF_SECRET,   /* --secret-conf: a map of name -> secret definition */
    CAPSA_CONF_SCRIPT,   /* --script-conf: a map of name -> script body */
};

/* The CLI flag of a kind ("--conf", "--net-conf", ...). */
const char *capsa_conf_kind_flag(enum capsa_conf_kind kind);
/* Kind of a CLI flag ("--conf", "--net-conf", ...; the leading dashes are required);
 * returns -1 for anything else. */
int capsa_conf_kind_from_flag(const char *flag);

struct capsa_conf_file {
    enum capsa_conf_kind kind;
    const char *path; /* relative paths inside resolve against this file's directory */
};

struct capsa_conf_sources {
    const struct capsa_conf_file *files; /* applied left to right */
    size_t n_files;
    json_t *global; /* borrowed: config.json as returned by capsa_global_config_load, or NULL */
};

/* Load every file of src, merge them over the config.json sandbox_defaults, apply
 * cli_overrides (borrowed, may be NULL) last, and check the result as a SandboxSpec.
 *
 * cli_overrides is a partial SandboxSpec in seed spelling holding the values given
 * explicitly on the command line. It is merged like this: objects merge field by field;
 * `image` and `network.policy` replace as a whole; keyed lists merge by key (env by `key`,
 * init.env by name, rlimits by `resource`, mounts by `guest`, network.secrets.secrets by
 * `env_var`), `patches` and `network.ports` are appended (repeatable CLI flags are additive),
 * every other list and every scalar replaces.
 *
 * Returns 0 with *spec_out a new reference to the normalized SandboxSpec, or -1 with every
 * error found appended to errs (which may be NULL). */
int capsa_conf_load(const struct capsa_conf_sources *src, json_t *cli_overrides, json_t **spec_out,
                    capsa_conf_errors *errs);

/* Read $CAPSA_HOME/config.json (strict JSON, duplicate keys and unknown fields rejected).
 * Accepted: home, log_level, sandbox_defaults{cpus, memory_mib, shell, workdir,
 * metrics_sample_interval_ms, disable_metrics_sample}, registries{ca_certs, hosts{HOST:
 * {insecure, auth{username, store|password_env|secret_name}}}} (passed through unchanged).
 * A missing file gives an empty object. Returns 0 and a new reference in *out, or -1. */
int capsa_global_config_load(json_t **out, capsa_err *err);
/* The same checks on a document already in memory; `where` names it in messages. */
int capsa_global_config_check(json_t *doc, const char *where, capsa_err *err);

#endif
