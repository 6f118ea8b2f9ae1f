/* registry.c - OCI Distribution API v2 client over libcurl (see registry.h). */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "image/registry.h"

#define TOKEN_MAX      (64 * 1024)
#define TOKEN_BODY_MAX (1u << 20)
#define ERRBODY_MAX    4096
#define HDR_MAX        4096
#define CRED_MAX       1024

struct capsa_registry {
    struct capsa_image_ref ref;
    char host[CAPSA_REGISTRY_MAX];
    bool insecure;
    bool use_http; /* decided after the first TLS failure with insecure */
    char *ca_certs;
    long timeout_s;
    char user[CRED_MAX];
    char pass[CRED_MAX];
    bool have_creds;
    char *authz;           /* "Authorization: ..." header line, or NULL */
    char token_scope[512]; /* the scope authz's Bearer token was issued for, or "" */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- response capture --------------------------------------------------------------- */

struct resp {
    long status;
    char content_type[CAPSA_MEDIA_TYPE_MAX];
    char docker_digest[CAPSA_DIGEST_MAX + 8];
    char www_auth[HDR_MAX];
    char content_range[128];
    char *body;
    size_t len, cap;
    size_t max;   /* bytes accepted before aborting */
    bool too_big; /* aborted because of max */
    bool to_file; /* job transfer: body goes to a file */
    struct capsa_blob_job *job;
    size_t job_index;
    capsa_blob_progress_fn progress;
    void *progress_ctx;
    bool started; /* first body byte of the final response seen */
    bool file_err;
};

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

static void copy_hdr_value(char *dst, size_t dlen, const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= dlen)
        n = dlen - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    struct resp *r = ud;
    size_t n = size * nitems;
    const char *colon;

    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* A new response (after a redirect or 100-continue): forget the previous headers. */
        char line[64];
        int code = 0;
        r->content_type[0] = r->docker_digest[0] = r->www_auth[0] = r->content_range[0] = '\0';
        snprintf(line, sizeof(line), "%.*s", (int)(n < 63 ? n : 63), buf);
        if (sscanf(line, "HTTP/%*s %d", &code) == 1)
            r->status = code;
        return n;
    }
    colon = memchr(buf, ':', n);
    if (!colon)
        return n;
    size_t klen = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vlen = n - klen - 1;
    if (klen == 12 && !strncasecmp(buf, "Content-Type", 12))
        copy_hdr_value(r->content_type, sizeof(r->content_type), v, vlen);
    else if (klen == 21 && !strncasecmp(buf, "Docker-Content-Digest", 21))
        copy_hdr_value(r->docker_digest, sizeof(r->docker_digest), v, vlen);
    else if (klen == 16 && !strncasecmp(buf, "WWW-Authenticate", 16))
        copy_hdr_value(r->www_auth, sizeof(r->www_auth), v, vlen);
    else if (klen == 13 && !strncasecmp(buf, "Content-Range", 13))
        copy_hdr_value(r->content_range, sizeof(r->content_range), v, vlen);
    return n;
}

static size_t mem_append(struct resp *r, const char *p, size_t n)
{
    if (r->len + n > r->max) {
        r->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->len + n + 1 > r->cap) {
        size_t ncap = r->cap ? r->cap : 8192;
        while (ncap < r->len + n + 1)
            ncap *= 2;
        char *nb = realloc(r->body, ncap);
        if (!nb)
            return 0;
        r->body = nb;
        r->cap = ncap;
    }
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* Content-Range: bytes START-END/TOTAL; returns START or -1. */
static int64_t range_start(const char *cr)
{
    long long s;

    if (sscanf(cr, "bytes %lld-", &s) != 1 || s < 0)
        return -1;
    return s;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct resp *r = ud;
    size_t n = size * nmemb;
    struct capsa_blob_job *j = r->job;

    if (!r->to_file)
        return mem_append(r, p, n);
    if (!r->started) {
        r->started = true;
        if (r->status == 200 && j->have > 0) {
            /* The server ignored our Range: start over. */
            if (ftruncate(j->fd, 0) < 0 || lseek(j->fd, 0, SEEK_SET) < 0) {
                r->file_err = true;
                return 0;
            }
            j->have = 0;
            capsa_sha256_init(&j->hash);
        } else if (r->status == 206 && range_start(r->content_range) != j->have) {
            capsa_err_set(&j->err, EPROTO,
                          "blob %s: registry answered a Range request from %lld "
                          "with Content-Range '%s'",
                          j->desc->digest, (long long)j->have, r->content_range);
            return 0;
        }
    }
    if (r->status != 200 && r->status != 206) {
        /* An error document: keep its start for the message, drop the rest. */
        if (r->len + n <= r->max)
            mem_append(r, p, n);
        return n;
    }
    if (j->have + (int64_t)n > j->desc->size) {
        capsa_err_set(&j->err, EFBIG,
                      "blob %s: registry sent more than the %lld bytes the "
                      "manifest declares",
                      j->desc->digest, (long long)j->desc->size);
        return 0;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(j->fd, p + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            capsa_err_set(&j->err, errno, "blob %s: write: %s", j->desc->digest, strerror(errno));
            r->file_err = true;
            return 0;
        }
        off += (size_t)w;
    }
    capsa_sha256_update(&j->hash, p, n);
    j->have += (int64_t)n;
    if (r->progress)
        r->progress(r->progress_ctx, r->job_index, j->have, j->desc->size);
    return n;
}

/* ---- easy-handle setup ---------------------------------------------------------------- */

static int base_url(const struct capsa_registry *r, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s://%s/v2/%s/", r->use_http ? "http" : "https", r->host,
                     r->ref.repository);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static int easy_setup(struct capsa_registry *r, CURL *h, const char *url, struct resp *resp,
                      struct curl_slist *hdrs, bool bounded_total)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "capsa/" CAPSA_VERSION);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, r->insecure ? "http,https" : "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, r->timeout_s);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, r->timeout_s);
    if (bounded_total)
        curl_easy_setopt(h, CURLOPT_TIMEOUT, r->timeout_s * 4);
    if (r->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (r->ca_certs)
        curl_easy_setopt(h, CURLOPT_CAINFO, r->ca_certs);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    return 0;
}

static bool tls_failure(CURLcode c)
{
    return c == CURLE_SSL_CONNECT_ERROR || c == CURLE_SSL_ENGINE_NOTFOUND ||
           c == CURLE_SSL_CIPHER || c == CURLE_PEER_FAILED_VERIFICATION ||
           c == CURLE_USE_SSL_FAILED;
}

/* A short printable excerpt of an error body (registry JSON errors or text). */
static void error_excerpt(const struct resp *resp, char *out, size_t len)
{
    json_t *root, *errs, *e0;

    out[0] = '\0';
    if (!resp->body || !resp->len)
        return;
    root = json_loadb(resp->body, resp->len, 0, NULL);
    if (root && (errs = json_object_get(root, "errors")) && (e0 = json_array_get(errs, 0))) {
        const char *code = json_string_value(json_object_get(e0, "code"));
        const char *msg = json_string_value(json_object_get(e0, "message"));
        snprintf(out, len, "%s%s%s", code ? code : "", code && msg ? ": " : "", msg ? msg : "");
    } else {
        snprintf(out, len, "%.*s", (int)(resp->len < 160 ? resp->len : 160), resp->body);
    }
    if (root)
        json_decref(root);
    for (char *p = out; *p; p++)
        if (!isprint((unsigned char)*p))
            *p = '?';
}

static int curl_fail(struct capsa_registry *r, const char *url, CURLcode c, const char *errbuf,
                     capsa_err *err)
{
    int code = EIO;

    if (c == CURLE_OPERATION_TIMEDOUT)
        return capsa_err_set(
            err, ETIMEDOUT, "%s: registry did not answer within %ld s (%s); is %s a registry?", url,
            r->timeout_s, errbuf[0] ? errbuf : curl_easy_strerror(c), r->host);
    if (c == CURLE_COULDNT_CONNECT)
        code = ECONNREFUSED;
    else if (c == CURLE_COULDNT_RESOLVE_HOST)
        code = EHOSTUNREACH;
    else if (c == CURLE_TOO_MANY_REDIRECTS)
        code = ELOOP;
    else if (tls_failure(c))
        return capsa_err_set(err, EPROTO, "%s: TLS failed: %s%s", url,
                             errbuf[0] ? errbuf : curl_easy_strerror(c),
                             r->insecure ? ""
                                         : " (use --ca-certs, or --insecure for a registry "
                                           "without valid TLS)");
    return capsa_err_set(err, code, "%s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(c));
}

/* ---- authentication ------------------------------------------------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static bool tchar_end(char c)
{
    return !c || c == '=' || c == ',' || c == ' ' || c == '\t' || c == '"';
}

int capsa_registry_challenge_params(const char *value, char *scheme, size_t scheme_len,
                                    const char *const *keys, char *const *vals,
                                    const size_t *val_lens, size_t n_keys)
{
    const char *p = skip_ws(value);
    size_t n = 0;

    for (size_t i = 0; i < n_keys; i++)
        vals[i][0] = '\0';
    while (!tchar_end(p[n]))
        n++;
    if (n == 0 || n >= scheme_len || (p[n] && p[n] != ' ' && p[n] != '\t' && p[n] != ','))
        return -1;
    memcpy(scheme, p, n);
    scheme[n] = '\0';
    p = skip_ws(p + n);
    for (;;) {
        const char *key, *q, *eq;
        size_t k = 0, v = 0, want = n_keys;
        char *dst = NULL;

        while (*p == ',') /* empty list elements are allowed (RFC 7230 section 7) */
            p = skip_ws(p + 1);
        if (!*p)
            return 0;
        key = p;
        while (!tchar_end(key[k]))
            k++;
        if (k == 0)
            return -1;
        q = skip_ws(key + k);
        if (*q != '=') {
            if (!*q || *q == ',') { /* a bare token (token68): nothing we use */
                p = q;
                continue;
            }
            return 0; /* "Bearer realm=..., Basic realm=...": the next challenge; use the first */
        }
        eq = q;
        for (q++; *q == '='; q++)
            ;
        if (q - eq > 1 || !*skip_ws(q) || *skip_ws(q) == ',') {
            p = skip_ws(q); /* a token68 ("abc==") or an empty value: nothing we use */
            continue;
        }
        for (size_t i = 0; i < n_keys; i++)
            if (strlen(keys[i]) == k && !strncasecmp(key, keys[i], k))
                want = i;
        if (want < n_keys)
            dst = vals[want];
        p = skip_ws(q);
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (dst) {
                    if (v + 1 >= val_lens[want])
                        return -1;
                    dst[v++] = *p;
                }
            }
            if (*p != '"')
                return -1;
            p++;
        } else {
            for (; !tchar_end(*p); p++) {
                if (dst) {
                    if (v + 1 >= val_lens[want])
                        return -1;
                    dst[v++] = *p;
                }
            }
        }
        if (dst)
            dst[v] = '\0';
        p = skip_ws(p);
        if (*p == ',')
            p = skip_ws(p + 1);
        else if (*p)
            return -1;
    }
}

int capsa_registry_parse_challenge(const char *value, char *scheme, size_t scheme_len, char *realm,
                                   size_t realm_len, char *service, size_t service_len, char *scope,
                                   size_t scope_len)
{
    static const char *const keys[] = {"realm", "service", "scope"};
    char *const vals[] = {realm, service, scope};
    const size_t lens[] = {realm_len, service_len, scope_len};

    return capsa_registry_challenge_params(value, scheme, scheme_len, keys, vals, lens, 3);
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = b64tab[(v >> 18) & 63];
        out[o++] = b64tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64tab[v & 63] : '=';
    }
    out[o] = '\0';
}

static int b64_decode(const char *in, char *out, size_t outlen, size_t *n)
{
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;

    for (; *in && *in != '='; in++) {
        const char *c = strchr(b64tab, *in);
        if (!c || !*in)
            return -1;
        acc = (acc << 6) | (unsigned)(c - b64tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= outlen)
                return -1;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *n = o;
    return 0;
}

static bool header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

static int set_basic(struct capsa_registry *r, capsa_err *err)
{
    char raw[2 * CRED_MAX + 2], enc[4 * (sizeof(raw) / 3 + 1) + 1];
    int n = snprintf(raw, sizeof(raw), "%s:%s", r->user, r->pass);

    b64_encode(raw, (size_t)n, enc);
    explicit_bzero(raw, sizeof(raw));
    free(r->authz);
    if (asprintf(&r->authz, "Authorization: Basic %s", enc) < 0) {
        r->authz = NULL;
        return capsa_err_set(err, ENOMEM, "registry: out of memory");
    }
    return 0;
}

static int http_get(struct capsa_registry *r, const char *url, struct curl_slist *extra, size_t max,
                    bool auth, struct resp *resp, capsa_err *err);

/* Append "&key=escaped(val)" (or "?key=...") to *url. */
static int url_param(CURL *h, char **url, const char *key, const char *val)
{
    char *esc = curl_easy_escape(h, val, 0), *n = NULL;

    if (esc && asprintf(&n, "%s%s%s=%s", *url, strchr(*url, '?') ? "&" : "?", key, esc) < 0)
        n = NULL;
    curl_free(esc);
    free(*url);
    *url = n;
    return n ? 0 : -1;
}

/* realm?service=S&scope=A&scope=B[&account=U]: one scope parameter per space-separated scope of
 * the challenge, as token servers expect. */
static char *token_url(struct capsa_registry *r, const char *realm, const char *service,
                       const char *scope)
{
    char buf[512], *save = NULL;
    char *url = strdup(realm);
    CURL *h = curl_easy_init();

    snprintf(buf, sizeof(buf), "%s", scope);
    if (url && h && service[0] && url_param(h, &url, "service", service) < 0)
        url = NULL;
    for (char *s = strtok_r(buf, " ", &save); url && h && s; s = strtok_r(NULL, " ", &save))
        if (url_param(h, &url, "scope", s) < 0)
            url = NULL;
    if (url && h && r->have_creds && url_param(h, &url, "account", r->user) < 0)
        url = NULL;
    if (!h) {
        free(url);
        url = NULL;
    }
    curl_easy_cleanup(h);
    return url;
}

static int fetch_token(struct capsa_registry *r, const char *realm, const char *service,
                       const char *scope, capsa_err *err)
{
    _cleanup_free_ char *url = NULL;
    struct resp resp = {0};
    json_t *root = NULL;
    const char *tok;
    int rc = -1;

    if (strncmp(realm, "https://", 8) != 0 && !(r->insecure && !strncmp(realm, "http://", 7)))
        return capsa_err_set(err, EPROTO,
                             "registry %s: token realm '%s' is not https (allowed only with "
                             "--insecure)",
                             r->host, realm);
    url = token_url(r, realm, service, scope);
    if (!url)
        return capsa_err_set(err, ENOMEM, "registry: out of memory");

    r->token_scope[0] = '\0';
    free(r->authz);
    r->authz = NULL;
    if (r->have_creds && set_basic(r, err) < 0)
        return -1;
    if (http_get(r, url, NULL, TOKEN_BODY_MAX, r->have_creds, &resp, err) < 0)
        goto out;
    free(r->authz);
    r->authz = NULL;
    if (resp.status != 200) {
        char ex[256];
        error_excerpt(&resp, ex, sizeof(ex));
        if ((resp.status == 401 || resp.status == 403) && r->have_creds)
            capsa_err_set(err, EACCES,
                          "registry %s: token server %s refused the credentials for '%s' "
                          "(HTTP %ld%s%s): wrong username or password? (capsa registry login %s)",
                          r->host, realm, r->user, resp.status, ex[0] ? ": " : "", ex, r->host);
        else if (resp.status == 401 || resp.status == 403)
            capsa_err_set(err, EACCES,
                          "registry %s: authentication required: token server %s refused an "
                          "anonymous token (HTTP %ld%s%s; capsa registry login %s)",
                          r->host, realm, resp.status, ex[0] ? ": " : "", ex, r->host);
        else
            capsa_err_set(err, EPROTO, "registry %s: token server %s answered HTTP %ld%s%s",
                          r->host, realm, resp.status, ex[0] ? ": " : "", ex);
        goto out;
    }
    root = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
    tok = json_string_value(json_object_get(root, "token"));
    if (!tok)
        tok = json_string_value(json_object_get(root, "access_token"));
    if (!tok || !*tok || strlen(tok) > TOKEN_MAX || !header_safe(tok)) {
        capsa_err_set(err, EPROTO,
                      "registry %s: token server %s returned no usable token (expected JSON "
                      "with a printable \"token\")",
                      r->host, realm);
        goto out;
    }
    if (asprintf(&r->authz, "Authorization: Bearer %s", tok) < 0) {
        r->authz = NULL;
        capsa_err_set(err, ENOMEM, "registry: out of memory");
        goto out;
    }
    snprintf(r->token_scope, sizeof(r->token_scope), "%s", scope);
    rc = 0;
out:
    if (root)
        json_decref(root);
    resp_free(&resp);
    return rc;
}

/* Answer the 401 challenge of a request that already answered `answered` challenges; returns 0
 * when a retry makes sense. Bearer: a token refused as invalid (expired, say) is fetched again,
 * but at most twice per request; a token that the registry finds too weak (insufficient_scope)
 * for the very scope it was issued for is not asked for again: more tokens would not help. */
static int authenticate(struct capsa_registry *r, const struct resp *resp, int answered,
                        capsa_err *err)
{
    static const char *const keys[] = {"realm", "service", "scope", "error"};
    char scheme[32], realm[1024], service[256], scope[512], error[64];
    char *const vals[] = {realm, service, scope, error};
    const size_t lens[] = {sizeof(realm), sizeof(service), sizeof(scope), sizeof(error)};

    if (!resp->www_auth[0] || capsa_registry_challenge_params(
                                  resp->www_auth, scheme, sizeof(scheme), keys, vals, lens, 4) < 0)
        return capsa_err_set(err, EACCES,
                             "registry %s: HTTP 401 without a usable WWW-Authenticate challenge",
                             r->host);
    if (!strcasecmp(scheme, "Basic")) {
        if (!r->have_creds)
            return capsa_err_set(err, EACCES,
                                 "registry %s: authentication required (capsa registry login %s, "
                                 "or set CAPSA_REGISTRY_USERNAME/CAPSA_REGISTRY_PASSWORD)",
                                 r->host, r->host);
        if (answered > 0)
            return capsa_err_set(
                err, EACCES,
                "registry %s: access denied: the credentials for '%s' were refused (wrong "
                "username or password? capsa registry login %s)",
                r->host, r->user, r->host);
        return set_basic(r, err);
    }
    if (!strcasecmp(scheme, "Bearer")) {
        char want[sizeof(scope)];
        if (!realm[0])
            return capsa_err_set(err, EPROTO, "registry %s: Bearer challenge without a realm",
                                 r->host);
        snprintf(want, sizeof(want), "%s", scope);
        if (!want[0])
            snprintf(want, sizeof(want), "repository:%s:pull", r->ref.repository);
        if (r->authz && !strcasecmp(error, "insufficient_scope") && !strcmp(r->token_scope, want)) {
            if (!r->have_creds)
                return capsa_err_set(err, EACCES,
                                     "registry %s: authentication required: an anonymous token "
                                     "gives no access to %s (the repository is private or does "
                                     "not exist; capsa registry login %s)",
                                     r->host, r->ref.repository, r->host);
            return capsa_err_set(err, EACCES,
                                 "registry %s: access denied: the token for '%s' gives no "
                                 "access to %s (no permission, or the repository does not exist)",
                                 r->host, r->user, r->ref.repository);
        }
        if (answered >= 2)
            return capsa_err_set(err, EACCES,
                                 "registry %s: a fresh token from %s was refused again%s%s%s; "
                                 "giving up (is the token server's signing certificate "
                                 "the registry's, and are the clocks right?)",
                                 r->host, realm, error[0] ? " (" : "", error, error[0] ? ")" : "");
        return fetch_token(r, realm, service, want, err);
    }
    return capsa_err_set(err, EACCES, "registry %s: unsupported authentication scheme '%s'",
                         r->host, scheme);
}

/* ---- single requests ------------------------------------------------------------------ */

static int http_get(struct capsa_registry *r, const char *url, struct curl_slist *extra, size_t max,
                    bool auth, struct resp *resp, capsa_err *err)
{
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *hdrs = NULL, *t;
    CURL *h = curl_easy_init();
    CURLcode c;

    memset(resp, 0, sizeof(*resp));
    resp->max = max;
    if (!h)
        return capsa_err_set(err, ENOMEM, "registry: curl_easy_init failed");
    for (struct curl_slist *e = extra; e; e = e->next) {
        t = curl_slist_append(hdrs, e->data);
        if (!t)
            goto oom;
        hdrs = t;
    }
    if (auth && r->authz) {
        t = curl_slist_append(hdrs, r->authz);
        if (!t)
            goto oom;
        hdrs = t;
    }
    easy_setup(r, h, url, resp, hdrs, true);
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
    c = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (resp->too_big || c == CURLE_FILESIZE_EXCEEDED) {
        resp_free(resp);
        return capsa_err_set(err, EFBIG, "%s: response larger than the %zu-byte cap", url, max);
    }
    if (c != CURLE_OK) {
        resp_free(resp);
        return curl_fail(r, url, c, errbuf, err);
    }
    return 0;
oom:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return capsa_err_set(err, ENOMEM, "registry: out of memory");
}

/* GET base+path with auth, answering challenges (see authenticate), and insecure http fallback. */
static int registry_get(struct capsa_registry *r, const char *path, struct curl_slist *extra,
                        size_t max, struct resp *resp, char *url, size_t url_len, capsa_err *err)
{
    int answered = 0; /* challenges answered; the TLS fallback is not one */

    for (int attempt = 0; attempt < 5; attempt++) {
        char base[CAPSA_REGISTRY_MAX + CAPSA_REPO_MAX + 32];
        capsa_err e = {0};
        if (base_url(r, base, sizeof(base)) < 0)
            return capsa_err_set(err, ENAMETOOLONG, "registry: URL too long");
        snprintf(url, url_len, "%s%s", base, path);
        if (http_get(r, url, extra, max, true, resp, &e) < 0) {
            if (r->insecure && !r->use_http && e.code == EPROTO && strstr(e.msg, "TLS")) {
                log_info("registry %s: no TLS, falling back to http (--insecure)", r->host);
                r->use_http = true;
                continue;
            }
            *err = e;
            return -1;
        }
        if (resp->status == 401) {
            /* authenticate() gives up after two answers, so the loop ends in time. */
            int rc = authenticate(r, resp, answered++, err);
            resp_free(resp);
            if (rc < 0)
                return -1;
            continue;
        }
        return 0;
    }
    return 0;
}

static int status_error(struct capsa_registry *r, const char *what, const char *url,
                        const struct resp *resp, capsa_err *err)
{
    char ex[256];

    error_excerpt(resp, ex, sizeof(ex));
    if (resp->status == 404)
        return capsa_err_set(err, ENOENT, "%s: not found in %s/%s (HTTP 404%s%s)", what, r->host,
                             r->ref.repository, ex[0] ? ": " : "", ex);
    if (resp->status == 401 || resp->status == 403)
        return capsa_err_set(err, EACCES, "%s: access denied by %s (HTTP %ld%s%s)", what, r->host,
                             resp->status, ex[0] ? ": " : "", ex);
    return capsa_err_set(err, EPROTO, "%s: %s answered HTTP %ld%s%s", what, url, resp->status,
                         ex[0] ? ": " : "", ex);
}

/* ---- public API ----------------------------------------------------------------------- */

/* The "auths" entry of a capsa auth.json or a Docker config.json for this registry: keyed by
 * host[:port], or by Docker's URL forms ("https://host", "https://index.docker.io/v1/"). */
static bool creds_from_file(struct capsa_registry *r, const char *path, bool must_be_private)
{
    static const char *const pre[] = {"", "https://", "http://", "https://"}, *const post[] = {
                                                                                  "", "", "",
                                                                                  "/v1/"};
    json_t *root, *auths, *ent = NULL;
    struct stat st;
    char key[600];
    bool ok = false;

    if (stat(path, &st) < 0)
        return false;
    if (must_be_private && (st.st_mode & 077)) {
        log_warn("%s: readable by others (mode %o); ignoring it (chmod 600)", path,
                 st.st_mode & 0777);
        return false;
    }
    root = json_load_file(path, 0, NULL);
    auths = json_object_get(root, "auths");
    for (size_t i = 0; !ent && i < sizeof(pre) / sizeof(pre[0]); i++) {
        snprintf(key, sizeof(key), "%s%s%s", pre[i], r->ref.registry, post[i]);
        ent = json_object_get(auths, key);
    }
    if (!ent && !strcmp(r->ref.registry, "docker.io"))
        ent = json_object_get(auths, "https://index.docker.io/v1/");
    if (ent) {
        const char *a = json_string_value(json_object_get(ent, "auth"));
        char dec[2 * CRED_MAX + 2];
        size_t n;
        if (a && b64_decode(a, dec, sizeof(dec), &n) == 0 && memchr(dec, ':', n)) {
            char *colon = strchr(dec, ':');
            *colon = '\0';
            snprintf(r->user, sizeof(r->user), "%s", dec);
            snprintf(r->pass, sizeof(r->pass), "%s", colon + 1);
            r->have_creds = ok = true;
            log_debug("registry %s: credentials from %s", r->ref.registry, path);
        }
        explicit_bzero(dec, sizeof(dec));
    }
    if (root)
        json_decref(root);
    return ok;
}

/* Credentials, first found wins: the caller's, CAPSA_REGISTRY_USERNAME/PASSWORD,
 * $CAPSA_HOME/auth.json (`capsa registry login`, must be 0600), then Docker's config.json
 * ($DOCKER_CONFIG/config.json or ~/.docker/config.json; credential helpers are not run). */
static void load_creds(struct capsa_registry *r, const struct capsa_registry_opts *o)
{
    const char *u = o ? o->username : NULL, *p = o ? o->password : NULL, *d;
    char path[4096];

    if (!u) {
        u = getenv("CAPSA_REGISTRY_USERNAME");
        p = getenv("CAPSA_REGISTRY_PASSWORD");
    }
    if (u && *u) {
        snprintf(r->user, sizeof(r->user), "%s", u);
        snprintf(r->pass, sizeof(r->pass), "%s", p ? p : "");
        r->have_creds = true;
        return;
    }
    if (capsa_path(path, sizeof(path), NULL, "auth.json") == 0 && creds_from_file(r, path, true))
        return;
    if ((d = getenv("DOCKER_CONFIG")) && *d)
        snprintf(path, sizeof(path), "%s/config.json", d);
    else if ((d = getenv("HOME")) && *d)
        snprintf(path, sizeof(path), "%s/.docker/config.json", d);
    else
        return;
    creds_from_file(r, path, false);
}

int capsa_registry_open(const struct capsa_image_ref *ref, const struct capsa_registry_opts *opts,
                        struct capsa_registry **out, capsa_err *err)
{
    struct capsa_registry *r;
    const char *env;

    pthread_once(&curl_once, curl_init_once);
    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return capsa_err_set(err, ENOMEM, "registry: out of memory");
    r->ref = *ref;
    snprintf(r->host, sizeof(r->host), "%s", capsa_image_ref_api_host(ref));
    r->insecure = opts && opts->insecure;
    r->timeout_s = opts && opts->timeout_s > 0 ? opts->timeout_s : 0;
    if (!r->timeout_s && (env = getenv("CAPSA_REGISTRY_TIMEOUT")) && atol(env) > 0)
        r->timeout_s = atol(env);
    if (!r->timeout_s)
        r->timeout_s = 30;
    if (opts && opts->ca_certs) {
        if (access(opts->ca_certs, R_OK) < 0) {
            int e = errno;
            free(r);
            return capsa_err_set(err, e, "--ca-certs %s: %s", opts->ca_certs, strerror(e));
        }
        r->ca_certs = strdup(opts->ca_certs);
    }
    load_creds(r, opts);
    *out = r;
    return 0;
}

void capsa_registry_close(struct capsa_registry *r)
{
    if (!r)
        return;
    free(r->ca_certs);
    if (r->authz)
        explicit_bzero(r->authz, strlen(r->authz));
    free(r->authz);
    explicit_bzero(r->pass, sizeof(r->pass));
    free(r);
}

void capsa_registry_closep(struct capsa_registry **r)
{
    capsa_registry_close(*r);
    *r = NULL;
}

static void digest_of(const void *p, size_t n, char out[CAPSA_DIGEST_MAX])
{
    uint8_t d[CAPSA_SHA256_LEN];
    char hex[CAPSA_SHA256_HEX];

    capsa_sha256_buf(p, n, d);
    capsa_sha256_hex(d, CAPSA_SHA256_LEN, hex);
    snprintf(out, CAPSA_DIGEST_MAX, "sha256:%s", hex);
}

int capsa_registry_get_manifest(struct capsa_registry *r, const char *reference, char **body,
                                size_t *len, char *content_type, size_t ct_len,
                                char digest[CAPSA_DIGEST_MAX], capsa_err *err)
{
    static const char accept[] = "Accept: " CAPSA_MT_OCI_INDEX ", " CAPSA_MT_OCI_MANIFEST
                                 ", " CAPSA_MT_DOCKER_LIST ", " CAPSA_MT_DOCKER_MANIFEST;
    struct curl_slist *hdrs = curl_slist_append(NULL, accept);
    char path[CAPSA_TAG_MAX + CAPSA_DIGEST_MAX + 16], url[1024], what[CAPSA_REF_MAX + 32];
    struct resp resp;
    int rc;

    *body = NULL;
    *len = 0;
    if (!hdrs)
        return capsa_err_set(err, ENOMEM, "registry: out of memory");
    snprintf(path, sizeof(path), "manifests/%s", reference);
    snprintf(what, sizeof(what), "manifest %s/%s%s%s", r->ref.registry, r->ref.repository,
             capsa_digest_valid(reference) ? "@" : ":", reference);
    rc = registry_get(r, path, hdrs, CAPSA_MANIFEST_MAX, &resp, url, sizeof(url), err);
    curl_slist_free_all(hdrs);
    if (rc < 0)
        return capsa_err_prefix(err, "%s", what);
    if (resp.status != 200) {
        status_error(r, what, url, &resp, err);
        resp_free(&resp);
        return -1;
    }
    digest_of(resp.body ? resp.body : "", resp.len, digest);
    if (capsa_digest_valid(reference) && strcmp(reference, digest) != 0) {
        resp_free(&resp);
        return capsa_err_set(err, EBADMSG, "%s: digest mismatch: body hashes to %s", what, digest);
    }
    if (resp.docker_digest[0] && capsa_digest_valid(resp.docker_digest) &&
        strcmp(resp.docker_digest, digest) != 0) {
        char got[CAPSA_DIGEST_MAX];
        snprintf(got, sizeof(got), "%s", resp.docker_digest);
        resp_free(&resp);
        return capsa_err_set(err, EBADMSG,
                             "%s: digest mismatch: registry says %s, body hashes to %s", what, got,
                             digest);
    }
    snprintf(content_type, ct_len, "%s", resp.content_type);
    if (!resp.body) {
        resp.body = strdup("");
        if (!resp.body)
            return capsa_err_set(err, ENOMEM, "registry: out of memory");
    }
    *body = resp.body;
    *len = resp.len;
    return 0;
}

int capsa_registry_get_blob(struct capsa_registry *r, const struct capsa_descriptor *d, size_t cap,
                            char **body, size_t *len, capsa_err *err)
{
    char path[CAPSA_DIGEST_MAX + 16], url[1024], what[CAPSA_DIGEST_MAX + 16], got[CAPSA_DIGEST_MAX];
    struct resp resp;

    *body = NULL;
    *len = 0;
    snprintf(what, sizeof(what), "blob %s", d->digest);
    if (d->size < 0 || (uint64_t)d->size > cap)
        return capsa_err_set(err, EFBIG, "%s: %lld bytes exceeds the %zu-byte cap", what,
                             (long long)d->size, cap);
    snprintf(path, sizeof(path), "blobs/%s", d->digest);
    if (registry_get(r, path, NULL, (size_t)d->size, &resp, url, sizeof(url), err) < 0)
        return capsa_err_prefix(err, "%s", what);
    if (resp.status != 200) {
        status_error(r, what, url, &resp, err);
        resp_free(&resp);
        return -1;
    }
    if ((int64_t)resp.len != d->size) {
        resp_free(&resp);
        return capsa_err_set(err, EBADMSG, "%s: truncated: got %zu of %lld bytes", what, resp.len,
                             (long long)d->size);
    }
    digest_of(resp.body ? resp.body : "", resp.len, got);
    if (strcmp(got, d->digest) != 0) {
        resp_free(&resp);
        return capsa_err_set(err, EBADMSG, "%s: digest mismatch: content hashes to %s", what, got);
    }
    if (!resp.body && !(resp.body = strdup("")))
        return capsa_err_set(err, ENOMEM, "registry: out of memory");
    *body = resp.body;
    *len = resp.len;
    return 0;
}

/* ---- parallel blob downloads ---------------------------------------------------------- */

struct job_state {
    CURL *h;
    struct curl_slist *hdrs;
    struct resp resp;
    char url[1024];
    char errbuf[CURL_ERROR_SIZE];
    bool need_auth;
    bool retry;
};

static int job_start(struct capsa_registry *r, CURLM *m, struct capsa_blob_job *j, size_t idx,
                     capsa_blob_progress_fn progress, void *ctx)
{
    struct job_state *s = j->priv;
    char base[CAPSA_REGISTRY_MAX + CAPSA_REPO_MAX + 32], range[64];
    struct curl_slist *t;

    memset(&s->resp, 0, sizeof(s->resp));
    s->resp.to_file = true;
    s->resp.job = j;
    s->resp.job_index = idx;
    s->resp.progress = progress;
    s->resp.progress_ctx = ctx;
    s->resp.max = ERRBODY_MAX;
    s->need_auth = s->retry = false;
    s->errbuf[0] = '\0';
    base_url(r, base, sizeof(base));
    snprintf(s->url, sizeof(s->url), "%sblobs/%s", base, j->desc->digest);
    if (lseek(j->fd, j->have, SEEK_SET) < 0)
        return capsa_err_set(&j->err, errno, "blob %s: seek: %s", j->desc->digest, strerror(errno));
    s->h = curl_easy_init();
    if (!s->h)
        return capsa_err_set(&j->err, ENOMEM, "registry: curl_easy_init failed");
    if (r->authz) {
        if (!(t = curl_slist_append(s->hdrs, r->authz)))
            return capsa_err_set(&j->err, ENOMEM, "registry: out of memory");
        s->hdrs = t;
    }
    easy_setup(r, s->h, s->url, &s->resp, s->hdrs, false);
    curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(s->h, CURLOPT_PRIVATE, j);
    /* Layers are large: fewer, bigger writes and hash updates than curl's 16 KiB default. */
    curl_easy_setopt(s->h, CURLOPT_BUFFERSIZE, 512L * 1024);
    if (j->have > 0) {
        snprintf(range, sizeof(range), "%lld-", (long long)j->have);
        curl_easy_setopt(s->h, CURLOPT_RANGE, range);
        log_debug("blob %s: resuming at byte %lld", j->desc->digest, (long long)j->have);
    }
    if (curl_multi_add_handle(m, s->h) != CURLM_OK)
        return capsa_err_set(&j->err, EIO, "registry: curl_multi_add_handle failed");
    return 0;
}

static void job_cleanup(CURLM *m, struct capsa_blob_job *j)
{
    struct job_state *s = j->priv;

    if (s->h) {
        curl_multi_remove_handle(m, s->h);
        curl_easy_cleanup(s->h);
        s->h = NULL;
    }
    curl_slist_free_all(s->hdrs);
    s->hdrs = NULL;
    resp_free(&s->resp);
}

/* Decide the outcome of a finished transfer. */
static void job_finish(struct capsa_registry *r, struct capsa_blob_job *j, CURLcode c)
{
    struct job_state *s = j->priv;
    char what[CAPSA_DIGEST_MAX + 16];

    snprintf(what, sizeof(what), "blob %s", j->desc->digest);
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->resp.status);
    if (j->err.code) { /* set by the write callback */
        j->rc = -1;
        return;
    }
    if (c != CURLE_OK) {
        if (c == CURLE_PARTIAL_FILE || c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR ||
            c == CURLE_GOT_NOTHING)
            s->retry = true;
        j->rc = curl_fail(r, s->url, c, s->errbuf, &j->err);
        capsa_err_prefix(&j->err, "%s", what);
        return;
    }
    if (s->resp.status == 401) {
        s->need_auth = true;
        j->rc = capsa_err_set(&j->err, EACCES, "%s: HTTP 401", what);
        return;
    }
    if (s->resp.status != 200 && s->resp.status != 206) {
        j->rc = status_error(r, what, s->url, &s->resp, &j->err);
        return;
    }
    j->rc = 0;
}

int capsa_registry_fetch_blobs(struct capsa_registry *r, struct capsa_blob_job *jobs, size_t n,
                               unsigned parallel, capsa_blob_progress_fn progress, void *ctx,
                               capsa_err *err)
{
    _cleanup_free_ struct job_state *states = calloc(n ? n : 1, sizeof(*states));
    CURLM *m;
    int failed = -1;

    if (!states)
        return capsa_err_set(err, ENOMEM, "registry: out of memory");
    if (parallel == 0)
        parallel = 3;
    m = curl_multi_init();
    if (!m)
        return capsa_err_set(err, ENOMEM, "registry: curl_multi_init failed");
    for (size_t i = 0; i < n; i++) {
        jobs[i].priv = &states[i];
        jobs[i].rc = 1; /* pending */
        memset(&jobs[i].err, 0, sizeof(jobs[i].err));
    }
    /* Up to three rounds: the second answers an expired token, retries cut connections. */
    for (int round = 0; round < 3; round++) {
        size_t next = 0, running_n = 0;
        bool any = false, reauth = false;

        for (size_t i = 0; i < n; i++)
            if (jobs[i].rc != 0)
                any = true;
        if (!any)
            break;
        for (;;) {
            while (running_n < parallel && next < n) {
                struct capsa_blob_job *j = &jobs[next];
                if (j->rc == 0 || (j->rc < 0 && !states[next].retry && !states[next].need_auth)) {
                    next++;
                    continue;
                }
                memset(&j->err, 0, sizeof(j->err));
                if (job_start(r, m, j, next, progress, ctx) < 0) {
                    j->rc = -1;
                    job_cleanup(m, j);
                    next++;
                    continue;
                }
                j->rc = 1;
                running_n++;
                next++;
            }
            if (running_n == 0)
                break;
            int still;
            curl_multi_perform(m, &still);
            CURLMsg *msg;
            int left;
            while ((msg = curl_multi_info_read(m, &left))) {
                if (msg->msg != CURLMSG_DONE)
                    continue;
                struct capsa_blob_job *j = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
                job_finish(r, j, msg->data.result);
                if (((struct job_state *)j->priv)->need_auth)
                    reauth = true;
                job_cleanup(m, j);
                running_n--;
            }
            if (running_n > 0)
                curl_multi_poll(m, NULL, 0, 1000, NULL);
        }
        if (reauth) {
            /* Ask again for a token with a cheap request that returns the challenge. */
            struct resp resp;
            char url[1024];
            capsa_err e = {0};
            if (registry_get(r, "tags/list?n=1", NULL, 64 * 1024, &resp, url, sizeof(url), &e) == 0)
                resp_free(&resp);
        }
    }
    curl_multi_cleanup(m);
    for (size_t i = 0; i < n; i++) {
        jobs[i].priv = NULL;
        if (jobs[i].rc != 0 && failed < 0)
            failed = (int)i;
    }
    if (failed >= 0) {
        *err = jobs[failed].err;
        return -1;
    }
    return 0;
}
