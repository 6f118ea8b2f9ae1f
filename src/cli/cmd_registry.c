/* cmd_registry.c - `capsa registry login|logout|ls`: registry credentials in $CAPSA_HOME/auth.json.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/paths.h"
#include "image/ref.h"
#include "image/registry.h"

#define CRED_MAX 1024

static const char registry_help[] =
    "Usage: capsa registry login HOST [--username U] [--password-stdin] [--insecure]\n"
    "       capsa registry logout HOST\n"
    "       capsa registry ls [--format table|json]\n"
    "\n"
    "Manage the credentials `capsa pull` and `capsa run IMAGE` send to registries. They are\n"
    "kept in $CAPSA_HOME/auth.json ({\"auths\":{\"HOST\":{\"auth\":\"base64(user:pass)\"}}},\n"
    "mode 0600, replaced atomically). CAPSA_REGISTRY_USERNAME/CAPSA_REGISTRY_PASSWORD, when\n"
    "set, take precedence over the file.\n"
    "\n"
    "login checks the credentials against HOST (a /v2/ request, answering a Basic or Bearer\n"
    "challenge) before storing them; wrong credentials are an error and nothing is stored.\n"
    "Without --password-stdin the password is read from the terminal without echo; without\n"
    "--username the user name is asked for. HOST is host[:port] as written in image\n"
    "references (docker.io for Docker Hub).\n"
    "\n"
    "Options:\n"
    "  -u, --username U     the user name\n"
    "      --password-stdin read the password from standard input (one line)\n"
    "      --insecure       login: allow plain http and unverified TLS for HOST\n"
    "      --format F       ls: table (default) or json; passwords are never shown\n"
    "  -h, --help           show this help\n";

/* ---- base64 ---------------------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const char *in, size_t n, char *out)
{
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v =
            (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned char)in[i] << 16 | (i + 1 < n ? (unsigned char)in[i + 1] << 8 : 0);
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* Decode into out (size cap); -1 on bad input or overflow. */
static int b64_decode(const char *in, char *out, size_t cap, size_t *outn)
{
    unsigned v = 0;
    int bits = 0;
    size_t o = 0;
    for (; *in && *in != '='; in++) {
        const char *p = strchr(b64chars, *in);
        if (!p)
            return -1;
        v = v << 6 | (unsigned)(p - b64chars);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= cap)
                return -1;
            out[o++] = (char)(v >> bits & 0xff);
        }
    }
    out[o] = '\0';
    *outn = o;
    return 0;
}

/* ---- auth.json --------------------------------------------------------------------------- */

/* Load auth.json (an empty document when missing). */
static int auth_load(const char *path, json_t **out, capsa_err *err)
{
    json_error_t je;
    json_t *root;

    if (access(path, F_OK) < 0) {
        *out = json_pack("{s:{}}", "auths");
        return *out ? 0 : capsa_err_set(err, ENOMEM, "auth.json: out of memory");
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return capsa_err_set(err, EINVAL, "%s: line %d: %s", path, je.line, je.text);
    if (!json_is_object(root) ||
        (json_object_get(root, "auths") && !json_is_object(json_object_get(root, "auths")))) {
        json_decref(root);
        return capsa_err_set(err, EINVAL, "%s: expected {\"auths\":{...}}", path);
    }
    if (!json_object_get(root, "auths"))
        json_object_set_new(root, "auths", json_object());
    *out = root;
    return 0;
}

/* Write root to path atomically: a private temp file in the same directory, fsync, rename. */
static int auth_save(const char *path, json_t *root, capsa_err *err)
{
    char tmp[4096];
    _cleanup_free_ char *text = NULL;
    _cleanup_close_ int fd = -1;
    size_t len, off = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return capsa_err_set(err, ENAMETOOLONG, "%s: path too long", path);
    text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return capsa_err_set(err, ENOMEM, "auth.json: out of memory");
    len = strlen(text);
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return capsa_err_set(err, errno, "%s: cannot create: %s", tmp, strerror(errno));
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            unlink(tmp);
            return capsa_err_set(err, e, "%s: write failed: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || fchmod(fd, 0600) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return capsa_err_set(err, e, "%s: cannot replace: %s", path, strerror(e));
    }
    return 0;
}

static int auth_path(char *buf, size_t len, capsa_err *err)
{
    char home[4096];
    if (capsa_home(home, sizeof(home), err) < 0 || capsa_mkdir_p(home, 0700, err) < 0)
        return -1;
    return capsa_path(buf, len, err, "auth.json");
}

/* HOST must name a registry (host[:port], "localhost" or with a '.' or ':'). */
static int check_host(const char *host, capsa_err *err)
{
    struct capsa_image_ref ref;
    char probe[CAPSA_REGISTRY_MAX + 16];

    if (!*host || strlen(host) >= CAPSA_REGISTRY_MAX || strchr(host, '/'))
        return capsa_err_set(err, EINVAL, "HOST '%s': expected host[:port]", host);
    snprintf(probe, sizeof(probe), "%s/probe", host);
    if (capsa_image_ref_parse(probe, &ref, err) < 0 || strcmp(ref.registry, host) != 0)
        return capsa_err_set(err, EINVAL,
                             "HOST '%s': expected a registry host[:port] (with a '.' or ':', "
                             "or localhost)",
                             host);
    return 0;
}

/* ---- verification --------------------------------------------------------------------- */

struct hdrs {
    char www_auth[1024];
};

static size_t hdr_cb(char *buf, size_t size, size_t n, void *priv)
{
    struct hdrs *h = priv;
    size_t len = size * n;
    if (len > 17 && strncasecmp(buf, "www-authenticate:", 17) == 0) {
        size_t s = 17, e = len;
        while (s < e && (buf[s] == ' ' || buf[s] == '\t'))
            s++;
        while (e > s && (buf[e - 1] == '\r' || buf[e - 1] == '\n' || buf[e - 1] == ' '))
            e--;
        if (e - s < sizeof(h->www_auth)) {
            memcpy(h->www_auth, buf + s, e - s);
            h->www_auth[e - s] = '\0';
        }
    }
    return len;
}

static size_t sink_cb(char *buf, size_t size, size_t n, void *priv)
{
    (void)buf;
    (void)priv;
    return size * n;
}

static void curl_cleanupp(CURL **c)
{
    if (*c)
        curl_easy_cleanup(*c);
}

/* GET url with Basic credentials; *status gets the HTTP status. */
static int get_status(const char *url, const char *user, const char *pass, bool insecure,
                      long *status, struct hdrs *h, capsa_err *err)
{
    _cleanup_(curl_cleanupp) CURL *c = curl_easy_init();
    CURLcode rc;

    if (!c)
        return capsa_err_set(err, ENOMEM, "registry: cannot initialise libcurl");
    memset(h, 0, sizeof(*h));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, insecure ? "http,https" : "https");
    curl_easy_setopt(c, CURLOPT_USERNAME, user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, pass);
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hdr_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_cb);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "capsa");
    if (insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        return capsa_err_set(err, rc == CURLE_SSL_CONNECT_ERROR ? EPROTO : EIO, "%s: %s", url,
                             curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

/* Check user/pass against HOST's /v2/. */
static int verify_login(const char *host, const char *user, const char *pass, bool insecure,
                        capsa_err *err)
{
    struct capsa_image_ref ref;
    char probe[CAPSA_REGISTRY_MAX + 16], url[2048];
    char scheme[32], realm[1024], service[512], scope[512];
    struct hdrs h;
    long status = 0;
    capsa_err e = {0};

    snprintf(probe, sizeof(probe), "%s/probe", host);
    if (capsa_image_ref_parse(probe, &ref, err) < 0)
        return -1;
    snprintf(url, sizeof(url), "https://%s/v2/", capsa_image_ref_api_host(&ref));
    if (get_status(url, user, pass, insecure, &status, &h, &e) < 0) {
        if (!insecure)
            return capsa_err_set(err, e.code, "login: %s (--insecure allows http)", e.msg);
        snprintf(url, sizeof(url), "http://%s/v2/", capsa_image_ref_api_host(&ref));
        if (get_status(url, user, pass, insecure, &status, &h, err) < 0)
            return capsa_err_prefix(err, "login");
    }
    if (status == 200)
        return 0;
    if (status != 401)
        return capsa_err_set(err, EPROTO, "login: %s answered HTTP %ld", url, status);
    if (!h.www_auth[0] ||
        capsa_registry_parse_challenge(h.www_auth, scheme, sizeof(scheme), realm, sizeof(realm),
                                       service, sizeof(service), scope, sizeof(scope)) < 0)
        return capsa_err_set(err, EPROTO, "login: %s answered 401 without a usable challenge", url);
    if (strcasecmp(scheme, "bearer") == 0) {
        _cleanup_(curl_cleanupp) CURL *c = curl_easy_init();
        _cleanup_free_ char *esc = NULL;
        char turl[2048];
        if (!c)
            return capsa_err_set(err, ENOMEM, "registry: cannot initialise libcurl");
        if (strncmp(realm, "https://", 8) != 0 && !(insecure && strncmp(realm, "http://", 7) == 0))
            return capsa_err_set(err, EPROTO, "login: token realm '%s' is not https", realm);
        if (service[0]) {
            char *s = curl_easy_escape(c, service, 0);
            if (!s)
                return capsa_err_set(err, ENOMEM, "login: out of memory");
            esc = strdup(s);
            curl_free(s);
            if (!esc)
                return capsa_err_set(err, ENOMEM, "login: out of memory");
        }
        snprintf(turl, sizeof(turl), "%s%s%s", realm,
                 esc ? (strchr(realm, '?') ? "&service=" : "?service=") : "", esc ? esc : "");
        if (get_status(turl, user, pass, insecure, &status, &h, err) < 0)
            return capsa_err_prefix(err, "login: token");
        if (status == 200)
            return 0;
    }
    if (status == 401 || status == 403)
        return capsa_err_set(err, EACCES,
                             "login: %s refused the credentials for '%s' (wrong "
                             "username or password)",
                             host, user);
    return capsa_err_set(err, EPROTO, "login: %s answered HTTP %ld", host, status);
}

/* ---- input ------------------------------------------------------------------------------ */

/* Read one line (without newline) from f into buf; echo off when f is a terminal and hide. */
static int read_line(FILE *f, bool hide, char *buf, size_t len, const char *what, capsa_err *err)
{
    struct termios old, quiet;
    bool restore = false;
    size_t n;

    if (hide && isatty(fileno(f)) && tcgetattr(fileno(f), &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fileno(f), TCSAFLUSH, &quiet) == 0;
    }
    if (!fgets(buf, (int)len, f)) {
        if (restore)
            tcsetattr(fileno(f), TCSAFLUSH, &old);
        return capsa_err_set(err, EINVAL, "%s: nothing to read", what);
    }
    if (restore) {
        tcsetattr(fileno(f), TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (n == len - 1)
        return capsa_err_set(err, E2BIG, "%s: longer than %zu bytes", what, len - 2);
    if (n && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return 0;
}

/* ---- verbs ---------------------------------------------------------------------------- */

static int registry_login(int argc, char **argv)
{
    static const struct option opts[] = {{"username", required_argument, NULL, 'u'},
                                         {"password-stdin", no_argument, NULL, 'p'},
                                         {"insecure", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    char user[CRED_MAX + 2] = "", pass[CRED_MAX + 2] = "", path[4096];
    char both[2 * CRED_MAX + 8], enc[4 * CRED_MAX + 16];
    bool pw_stdin = false, insecure = false;
    json_auto_t *root = NULL;
    capsa_err err = {0};
    const char *host;
    int c, rc = 1;

    optind = 1;
    while ((c = getopt_long(argc, argv, "u:h", opts, NULL)) != -1) {
        switch (c) {
        case 'u':
            if (strlen(optarg) > CRED_MAX)
                return cli_fail("registry login: --username longer than %d bytes", CRED_MAX);
            snprintf(user, sizeof(user), "%s", optarg);
            break;
        case 'p':
            pw_stdin = true;
            break;
        case 'k':
            insecure = true;
            break;
        case 'h':
            fputs(registry_help, stdout);
            return 0;
        default:
            return 2;
        }
    }
    if (optind + 1 != argc)
        return cli_fail("registry login: expected one HOST (capsa registry login HOST)");
    host = argv[optind];
    if (check_host(host, &err) < 0)
        return cli_fail("registry login: %s", err.msg);
    if (!user[0]) {
        FILE *tty = fopen("/dev/tty", "r+");
        if (!tty)
            return cli_fail("registry login: --username is required when there is no terminal");
        fputs("Username: ", stderr);
        rc = read_line(tty, false, user, sizeof(user), "username", &err);
        fclose(tty);
        if (rc < 0)
            return cli_fail("registry login: %s", err.msg);
    }
    if (!user[0] || strchr(user, ':'))
        return cli_fail("registry login: username must be non-empty and contain no ':'");
    if (pw_stdin) {
        if (read_line(stdin, false, pass, sizeof(pass), "password (stdin)", &err) < 0)
            return cli_fail("registry login: %s", err.msg);
    } else {
        FILE *tty = fopen("/dev/tty", "r+");
        if (!tty)
            return cli_fail("registry login: no terminal to ask for the password (use "
                            "--password-stdin)");
        fputs("Password: ", stderr);
        rc = read_line(tty, true, pass, sizeof(pass), "password", &err);
        fclose(tty);
        if (rc < 0)
            return cli_fail("registry login: %s", err.msg);
    }
    rc = 1;
    if (!pass[0]) {
        cli_fail("registry login: empty password");
        goto out;
    }
    if (verify_login(host, user, pass, insecure, &err) < 0) {
        cli_fail("registry %s", err.msg);
        goto out;
    }
    snprintf(both, sizeof(both), "%s:%s", user, pass);
    b64_encode(both, strlen(both), enc);
    if (auth_path(path, sizeof(path), &err) < 0 || auth_load(path, &root, &err) < 0) {
        cli_fail("registry login: %s", err.msg);
        goto out;
    }
    json_object_set_new(json_object_get(root, "auths"), host, json_pack("{s:s}", "auth", enc));
    if (auth_save(path, root, &err) < 0) {
        cli_fail("registry login: %s", err.msg);
        goto out;
    }
    printf("Login succeeded: %s as %s\n", host, user);
    rc = 0;
out:
    explicit_bzero(pass, sizeof(pass));
    explicit_bzero(both, sizeof(both));
    explicit_bzero(enc, sizeof(enc));
    return rc;
}

static int registry_logout(int argc, char **argv)
{
    json_auto_t *root = NULL;
    char path[4096];
    capsa_err err = {0};
    json_t *auths;

    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(registry_help, stdout);
        return 0;
    }
    if (argc != 2)
        return cli_fail("registry logout: expected one HOST (capsa registry logout HOST)");
    if (auth_path(path, sizeof(path), &err) < 0 || auth_load(path, &root, &err) < 0)
        return cli_fail("registry logout: %s", err.msg);
    auths = json_object_get(root, "auths");
    if (!json_object_get(auths, argv[1]))
        return cli_fail("registry logout: not logged in to %s", argv[1]);
    json_object_del(auths, argv[1]);
    if (auth_save(path, root, &err) < 0)
        return cli_fail("registry logout: %s", err.msg);
    printf("Removed credentials for %s\n", argv[1]);
    return 0;
}

static int registry_ls(int argc, char **argv)
{
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    json_auto_t *root = NULL;
    json_auto_t *list = json_array();
    const char *format = "table", *host;
    char path[4096];
    capsa_err err = {0};
    json_t *ent;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            format = optarg;
            break;
        case 'h':
            fputs(registry_help, stdout);
            return 0;
        default:
            return 2;
        }
    }
    if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)
        return cli_fail("registry ls: --format '%s': expected table or json", format);
    if (optind != argc)
        return cli_fail("registry ls: takes no arguments");
    if (!list || capsa_path(path, sizeof(path), &err, "auth.json") < 0 ||
        auth_load(path, &root, &err) < 0)
        return cli_fail("registry ls: %s", err.msg[0] ? err.msg : "out of memory");
    json_object_foreach(json_object_get(root, "auths"), host, ent)
    {
        const char *a = json_string_value(json_object_get(ent, "auth"));
        char dec[2 * CRED_MAX + 8], *colon;
        size_t n;
        const char *user = "";
        if (a && b64_decode(a, dec, sizeof(dec), &n) == 0 && (colon = memchr(dec, ':', n))) {
            *colon = '\0';
            user = dec;
        }
        json_array_append_new(list, json_pack("{s:s,s:s}", "host", host, "username", user));
        explicit_bzero(dec, sizeof(dec));
    }
    if (!strcmp(format, "json")) {
        _cleanup_free_ char *s = json_dumps(list, JSON_INDENT(2));
        if (!s)
            return cli_fail("registry ls: out of memory");
        puts(s);
        return 0;
    }
    printf("%-40s %s\n", "HOST", "USERNAME");
    size_t i;
    json_array_foreach(list, i, ent)
        printf("%-40s %s\n", json_string_value(json_object_get(ent, "host")),
               json_string_value(json_object_get(ent, "username")));
    return 0;
}

int cmd_registry(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(registry_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "login"))
        return registry_login(argc - 1, argv + 1);
    if (!strcmp(argv[1], "logout"))
        return registry_logout(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ls") || !strcmp(argv[1], "list"))
        return registry_ls(argc - 1, argv + 1);
    return cli_fail("registry: unknown command '%s' (login, logout, ls)", argv[1]);
}
