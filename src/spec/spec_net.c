/* spec_net.c - schema tables of the network subdocuments NetworkSpec carries as JsonValue:
 * policy (NetworkPolicy), dns (DnsConfig), tls (TlsConfig), secrets (SecretsConfig) and
 * interface (InterfaceOverrides); see reference section 3.6. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "spec/spec_int.h"

/* DNS name: checked, then lowercased with leading/trailing dots stripped. */
static json_t *norm_domain(struct spec_ctx *c, json_t *in, const void *arg)
{
    static const struct spec_string s = {255, NULL, false};
    json_t *v = spec_norm_string(c, in, &s);
    _cleanup_free_ char *d = NULL;
    const char *msg;
    size_t len;
    char *p;

    if (!v)
        return NULL;
    d = strdup(json_string_value(v));
    json_decref(v);
    if (!d)
        return NULL;
    for (p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    p = d;
    while (*p == '.')
        p++;
    len = strlen(p);
    while (len && p[len - 1] == '.')
        p[--len] = '\0';
    if ((msg = spec_check_domain(p))) {
        spec_error(c, "%s", msg);
        return NULL;
    }
    return json_string(p);
}

/* "*.example.com": a wildcard host pattern, lowercased. */
static json_t *norm_wildcard(struct spec_ctx *c, json_t *in, const void *arg)
{
    const char *s = json_string_value(in);
    json_t *rest, *out;
    size_t saved = c->len;

    if (!s || strncmp(s, "*.", 2)) {
        spec_error(c, "must be a wildcard pattern \"*.DOMAIN\"");
        return NULL;
    }
    rest = json_string(s + 2);
    rest = rest ? rest : json_null();
    out = norm_domain(c, rest, NULL);
    json_decref(rest);
    spec_pop(c, saved);
    if (!out)
        return NULL;
    {
        char buf[300];
        snprintf(buf, sizeof(buf), "*.%s", json_string_value(out));
        json_string_set(out, buf);
    }
    return out;
}

/* TLS bypass entry: "host.example" or "*.example". */
static json_t *norm_bypass(struct spec_ctx *c, json_t *in, const void *arg)
{
    const char *s = json_string_value(in);
    if (s && !strncmp(s, "*.", 2))
        return norm_wildcard(c, in, NULL);
    return norm_domain(c, in, NULL);
}

/* ---- NetworkPolicy --------------------------------------------------------------------- */

static const char *const actions[] = {"allow", "deny", NULL};
static const char *const directions[] = {"egress", "ingress", "any", NULL};
static const char *const protocols[] = {"tcp", "udp", "icmpv4", "icmpv6", NULL};
static const char *const groups[] = {"public",   "loopback",  "private", "link_local",
                                     "metadata", "multicast", "host",    NULL};

static const struct spec_string str_cidr = {64, spec_check_cidr, false};
static const struct spec_variant dest_variants[] = {
    {"any", NULL, NULL},
    {"cidr", spec_norm_string, &str_cidr},
    {"domain", norm_domain, NULL},
    {"domain_suffix", norm_domain, NULL},
    {"group", spec_norm_enum, groups},
};
static const struct spec_tagged tg_destination = {"Destination", dest_variants,
                                                  ARRAY_SIZE(dest_variants)};

static void port_range_post(struct spec_ctx *c, json_t *out)
{
    json_int_t s = spec_get_int(out, "start", -1), e = spec_get_int(out, "end", -1);
    if (s > 0 && e > 0 && e < s) {
        size_t saved = spec_push_field(c, "end");
        spec_error(c, "must not be below start (%" JSON_INTEGER_FORMAT ")", s);
        spec_pop(c, saved);
    }
}

static const struct spec_field port_range_fields[] = {
    {"start", spec_norm_int, &spec_range_port, SF_REQUIRED, NULL},
    {"end", spec_norm_int, &spec_range_port, SF_REQUIRED, NULL},
};
static const struct spec_object obj_port_range =
    SPEC_OBJECT("PortRange", port_range_fields, port_range_post);
static const struct spec_array arr_port_ranges = {spec_norm_object, &obj_port_range, 256};
static const struct spec_array arr_protocols = {spec_norm_enum, protocols, 4};

static const struct spec_field rule_fields[] = {
    {"direction", spec_norm_enum, directions, SF_REQUIRED, NULL},
    {"destination", spec_norm_tagged, &tg_destination, SF_REQUIRED, NULL},
    {"protocols", spec_norm_array, &arr_protocols, 0, "[]"},
    {"ports", spec_norm_array, &arr_port_ranges, 0, "[]"},
    {"action", spec_norm_enum, actions, SF_REQUIRED, NULL},
};
static const struct spec_object obj_rule = SPEC_OBJECT("Rule", rule_fields, NULL);
static const struct spec_array arr_rules = {spec_norm_object, &obj_rule, 4096};

static const struct spec_field policy_fields[] = {
    {"default_egress", spec_norm_enum, actions, 0, "\"deny\""},
    {"default_ingress", spec_norm_enum, actions, 0, "\"deny\""},
    {"rules", spec_norm_array, &arr_rules, 0, "[]"},
};
const struct spec_object spec_obj_network_policy =
    SPEC_OBJECT("NetworkPolicy", policy_fields, NULL);

/* ---- DnsConfig ------------------------------------------------------------------------- */

/* "IP", "IP:PORT", "[IPv6]:PORT", "HOST", "HOST:PORT". */
static const char *check_nameserver(const char *s)
{
    static const char *msg = "must be IP, IP:PORT, [IPv6]:PORT, HOST or HOST:PORT";
    char host[300];
    const char *port = NULL;
    unsigned char buf[16];

    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || (size_t)(e - s - 1) >= sizeof(host))
            return msg;
        memcpy(host, s + 1, (size_t)(e - s - 1));
        host[e - s - 1] = '\0';
        if (inet_pton(AF_INET6, host, buf) != 1)
            return msg;
        if (e[1] == '\0')
            return NULL;
        if (e[1] != ':')
            return msg;
        port = e + 2;
    } else if (inet_pton(AF_INET6, s, buf) == 1) {
        return NULL;
    } else {
        const char *colon = strchr(s, ':');
        size_t n = colon ? (size_t)(colon - s) : strlen(s);
        if (n >= sizeof(host))
            return msg;
        memcpy(host, s, n);
        host[n] = '\0';
        if (inet_pton(AF_INET, host, buf) != 1 && spec_check_domain(host))
            return msg;
        if (colon)
            port = colon + 1;
    }
    if (port) {
        long v = 0;
        if (!*port || strlen(port) > 5)
            return msg;
        for (const char *p = port; *p; p++) {
            if (!isdigit((unsigned char)*p))
                return msg;
            v = v * 10 + (*p - '0');
        }
        if (v < 1 || v > 65535)
            return "has a port outside 1..65535";
    }
    return NULL;
}

static const struct spec_string str_nameserver = {300, check_nameserver, false};
static const struct spec_array arr_nameservers = {spec_norm_string, &str_nameserver, 16};
static const struct spec_range range_dns_timeout = {1, 300000, "ms"};

static const struct spec_field dns_fields[] = {
    {"rebind_protection", spec_norm_bool, NULL, 0, "true"},
    {"nameservers", spec_norm_array, &arr_nameservers, 0, "[]"},
    {"query_timeout_ms", spec_norm_int, &range_dns_timeout, 0, "5000"},
};
const struct spec_object spec_obj_dns_config = SPEC_OBJECT("DnsConfig", dns_fields, NULL);

/* ---- TlsConfig ------------------------------------------------------------------------- */

static const struct spec_array arr_ports = {spec_norm_int, &spec_range_port, 64};
static const struct spec_array arr_bypass = {norm_bypass, NULL, 4096};
static const struct spec_array arr_paths = {spec_norm_string, &spec_str_host_path, 256};

static const struct spec_field scoped_ca_fields[] = {
    {"pattern", norm_bypass, NULL, SF_REQUIRED, NULL},
    {"path", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
};
static const struct spec_object obj_scoped_ca =
    SPEC_OBJECT("ScopedUpstreamCaCert", scoped_ca_fields, NULL);
static const struct spec_array arr_scoped_ca = {spec_norm_object, &obj_scoped_ca, 256};

static const struct spec_field scoped_verify_fields[] = {
    {"pattern", norm_bypass, NULL, SF_REQUIRED, NULL},
    {"verify", spec_norm_bool, NULL, SF_REQUIRED, NULL},
};
static const struct spec_object obj_scoped_verify =
    SPEC_OBJECT("ScopedVerifyUpstream", scoped_verify_fields, NULL);
static const struct spec_array arr_scoped_verify = {spec_norm_object, &obj_scoped_verify, 256};

static void intercept_ca_post(struct spec_ctx *c, json_t *out)
{
    bool cert = json_is_string(json_object_get(out, "cert_path"));
    bool key = json_is_string(json_object_get(out, "key_path"));
    if (cert != key) {
        size_t saved = spec_push_field(c, cert ? "key_path" : "cert_path");
        spec_error(c, "is required when %s is set", cert ? "cert_path" : "key_path");
        spec_pop(c, saved);
    }
}

static const struct spec_field intercept_ca_fields[] = {
    {"cert_path", spec_norm_string, &spec_str_host_path, SF_NULLABLE, NULL},
    {"key_path", spec_norm_string, &spec_str_host_path, SF_NULLABLE, NULL},
};
static const struct spec_object obj_intercept_ca =
    SPEC_OBJECT("InterceptCa", intercept_ca_fields, intercept_ca_post);

static const struct spec_range range_cache_cap = {1, 1000000, NULL};
static const struct spec_range range_validity = {1, 24 * 366, "hours"};
static const struct spec_field cache_fields[] = {
    {"capacity", spec_norm_int, &range_cache_cap, 0, "1000"},
    {"validity_hours", spec_norm_int, &range_validity, 0, "24"},
};
static const struct spec_object obj_cert_cache = SPEC_OBJECT("CertCache", cache_fields, NULL);

static const struct spec_field tls_fields[] = {
    {"enabled", spec_norm_bool, NULL, 0, "false"},
    {"intercepted_ports", spec_norm_array, &arr_ports, 0, "[443]"},
    {"bypass", spec_norm_array, &arr_bypass, 0, "[]"},
    {"verify_upstream", spec_norm_bool, NULL, 0, "true"},
    {"block_quic_on_intercept", spec_norm_bool, NULL, 0, "true"},
    {"upstream_ca_cert", spec_norm_array, &arr_paths, 0, "[]"},
    {"scoped_upstream_ca_cert", spec_norm_array, &arr_scoped_ca, 0, "[]"},
    {"scoped_verify_upstream", spec_norm_array, &arr_scoped_verify, 0, "[]"},
    {"intercept_ca", spec_norm_object, &obj_intercept_ca, 0, "{}"},
    {"cache", spec_norm_object, &obj_cert_cache, 0, "{}"},
};
const struct spec_object spec_obj_tls_config = SPEC_OBJECT("TlsConfig", tls_fields, NULL);

/* ---- SecretsConfig --------------------------------------------------------------------- */

static const struct spec_variant host_pattern_variants[] = {
    {"any", NULL, NULL},
    {"exact", norm_domain, NULL},
    {"wildcard", norm_wildcard, NULL},
};
static const struct spec_tagged tg_host_pattern = {"HostPattern", host_pattern_variants,
                                                   ARRAY_SIZE(host_pattern_variants)};
static const struct spec_array arr_host_patterns = {spec_norm_tagged, &tg_host_pattern, 1024};

static const struct spec_variant violation_variants[] = {
    {"block", NULL, NULL},
    {"block-and-log", NULL, NULL},
    {"block-and-terminate", NULL, NULL},
    {"passthrough", spec_norm_array, &arr_host_patterns},
};
static const struct spec_tagged tg_violation = {"ViolationAction", violation_variants,
                                                ARRAY_SIZE(violation_variants)};

static const struct spec_string str_env_key = {4096, spec_check_env_key, false};
static const struct spec_field src_env_fields[] = {
    {"kind", spec_norm_const, "env", SF_REQUIRED, NULL},
    {"var", spec_norm_string, &str_env_key, SF_REQUIRED, NULL},
};
static const struct spec_field src_store_fields[] = {
    {"kind", spec_norm_const, "store", SF_REQUIRED, NULL},
    {"reference", spec_norm_string, &spec_str_any, SF_REQUIRED, NULL},
};
static const struct spec_object obj_src_env = SPEC_OBJECT("SecretSource env", src_env_fields, NULL);
static const struct spec_object obj_src_store =
    SPEC_OBJECT("SecretSource store", src_store_fields, NULL);
static const char *const src_tags[] = {"env", "store", NULL};
static const struct spec_object *const src_objs[] = {&obj_src_env, &obj_src_store};
static const struct spec_itagged it_secret_source = {"SecretSource", "kind", src_tags, src_objs};

static const struct spec_field injection_fields[] = {
    {"headers", spec_norm_bool, NULL, 0, "true"},
    {"basic_auth", spec_norm_bool, NULL, 0, "true"},
    {"query_params", spec_norm_bool, NULL, 0, "false"},
    {"body", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_object obj_injection =
    SPEC_OBJECT("SecretInjection", injection_fields, NULL);

static const char *check_placeholder(const char *s)
{
    return strpbrk(s, "\r\n") ? "must not contain CR or LF" : NULL;
}
static const struct spec_string str_placeholder = {1024, check_placeholder, false};

/* Placeholder the guest sees in place of the secret when none is given. */
#define SECRET_PLACEHOLDER_PREFIX "$CAPSA_"

static void secret_post(struct spec_ctx *c, json_t *out)
{
    const char *env = spec_get_str(out, "env_var");
    const char *value = spec_get_str(out, "value");
    bool has_source = json_is_object(json_object_get(out, "source"));
    json_t *hosts = json_object_get(out, "allowed_hosts");
    size_t saved;

    if (value && has_source && value[0]) {
        saved = spec_push_field(c, "value");
        spec_error(c, "must be empty when source is set");
        spec_pop(c, saved);
    } else if (value && !value[0] && json_is_null(json_object_get(out, "source"))) {
        saved = spec_push_field(c, "value");
        spec_error(c, "is required (non-empty) unless source is set");
        spec_pop(c, saved);
    }
    if (json_is_array(hosts) && json_array_size(hosts) == 0) {
        saved = spec_push_field(c, "allowed_hosts");
        spec_error(c, "must list at least one host pattern");
        spec_pop(c, saved);
    }
    if (env && !json_object_get(out, "placeholder")) {
        _cleanup_free_ char *ph = NULL;
        if (asprintf(&ph, SECRET_PLACEHOLDER_PREFIX "%s", env) >= 0 && strlen(ph) <= 1024)
            json_object_set_new(out, "placeholder", json_string(ph));
    }
}

static const struct spec_field secret_fields[] = {
    {"env_var", spec_norm_string, &str_env_key, SF_REQUIRED, NULL},
    {"value", spec_norm_string, &spec_str_text, 0, "\"\""},
    {"source", spec_norm_itagged, &it_secret_source, SF_NULLABLE, NULL},
    {"placeholder", spec_norm_string, &str_placeholder, SF_OPTIONAL, NULL},
    {"allowed_hosts", spec_norm_array, &arr_host_patterns, SF_REQUIRED, NULL},
    {"injection", spec_norm_object, &obj_injection, 0, "{}"},
    {"on_violation", spec_norm_tagged, &tg_violation, SF_NULLABLE, NULL},
    {"require_tls_identity", spec_norm_bool, NULL, 0, "true"},
};

static void secret_post_ordered(struct spec_ctx *c, json_t *out)
{
    json_t *copy;

    secret_post(c, out);
    /* Re-insert fields in table order (placeholder may have been appended last). */
    copy = json_copy(out);
    if (!copy)
        return;
    json_object_clear(out);
    for (size_t i = 0; i < ARRAY_SIZE(secret_fields); i++) {
        json_t *v = json_object_get(copy, secret_fields[i].name);
        if (v)
            json_object_set(out, secret_fields[i].name, v);
    }
    json_decref(copy);
}

static const struct spec_object obj_secret =
    SPEC_OBJECT("SecretEntry", secret_fields, secret_post_ordered);
static const struct spec_array arr_secrets = {spec_norm_object, &obj_secret, 256};

static void secrets_post(struct spec_ctx *c, json_t *out)
{
    json_t *arr = json_object_get(out, "secrets");
    size_t n = json_array_size(arr);

    for (size_t j = 0; j < n; j++) {
        const char *ej = spec_get_str(json_array_get(arr, j), "env_var");
        for (size_t i = 0; ej && i < j; i++) {
            const char *ei = spec_get_str(json_array_get(arr, i), "env_var");
            if (ei && !strcmp(ei, ej)) {
                size_t saved = spec_push_field(c, "secrets");
                spec_push_index(c, j);
                spec_push_field(c, "env_var");
                spec_error(c, "duplicate secret \"%.200s\" (also secrets[%zu])", ej, i);
                spec_pop(c, saved);
                break;
            }
        }
    }
}

static const struct spec_field secrets_fields[] = {
    {"secrets", spec_norm_array, &arr_secrets, 0, "[]"},
    {"on_violation", spec_norm_tagged, &tg_violation, 0, "\"block-and-log\""},
};
const struct spec_object spec_obj_secrets_config =
    SPEC_OBJECT("SecretsConfig", secrets_fields, secrets_post);

/* ---- InterfaceOverrides ---------------------------------------------------------------- */

static const char *check_mac(const char *s)
{
    static const char *msg = "must be a unicast MAC address like 02:00:00:00:00:01";
    unsigned first = 0;

    if (strlen(s) != 17)
        return msg;
    for (int i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            return msg;
    }
    sscanf(s, "%2x", &first);
    return (first & 1) ? msg : NULL;
}

static json_t *norm_mac(struct spec_ctx *c, json_t *in, const void *arg)
{
    static const struct spec_string s = {17, check_mac, false};
    json_t *v = spec_norm_string(c, in, &s);
    char buf[18];

    if (!v)
        return NULL;
    snprintf(buf, sizeof(buf), "%s", json_string_value(v));
    for (char *p = buf; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    json_string_set(v, buf);
    return v;
}

static const char *check_ipv4(const char *s)
{
    unsigned char b[4];
    return inet_pton(AF_INET, s, b) == 1 ? NULL : "must be an IPv4 address";
}
static const char *check_ipv6(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET6, s, b) == 1 ? NULL : "must be an IPv6 address";
}
static const char *check_cidr4(const char *s)
{
    return (!strchr(s, ':') && strchr(s, '/') && !spec_check_cidr(s))
               ? NULL
               : "must be an IPv4 CIDR block like 172.16.0.0/12";
}
static const char *check_cidr6(const char *s)
{
    return (strchr(s, ':') && strchr(s, '/') && !spec_check_cidr(s))
               ? NULL
               : "must be an IPv6 CIDR block like fd42::/48";
}

static const struct spec_string str_ipv4 = {64, check_ipv4, false};
static const struct spec_string str_ipv6 = {64, check_ipv6, false};
static const struct spec_string str_cidr4 = {64, check_cidr4, false};
static const struct spec_string str_cidr6 = {64, check_cidr6, false};
static const struct spec_range range_mtu = {576, 9216, NULL};

static const struct spec_field iface_fields[] = {
    {"mac", norm_mac, NULL, SF_NULLABLE, NULL},
    {"mtu", spec_norm_int, &range_mtu, 0, "1500"},
    {"ipv4_address", spec_norm_string, &str_ipv4, SF_NULLABLE, NULL},
    {"ipv4_pool", spec_norm_string, &str_cidr4, SF_NULLABLE, NULL},
    {"ipv6_address", spec_norm_string, &str_ipv6, SF_NULLABLE, NULL},
    {"ipv6_pool", spec_norm_string, &str_cidr6, SF_NULLABLE, NULL},
};
const struct spec_object spec_obj_interface_overrides =
    SPEC_OBJECT("InterfaceOverrides", iface_fields, NULL);

const struct spec_type spec_net_types[] = {
    {"NetworkPolicy", spec_norm_object, &spec_obj_network_policy},
    {"DnsConfig", spec_norm_object, &spec_obj_dns_config},
    {"TlsConfig", spec_norm_object, &spec_obj_tls_config},
    {"SecretsConfig", spec_norm_object, &spec_obj_secrets_config},
    {"SecretEntry", spec_norm_object, &obj_secret},
    {"InterfaceOverrides", spec_norm_object, &spec_obj_interface_overrides},
};
const size_t spec_net_ntypes = ARRAY_SIZE(spec_net_types);
