/* test_tarbuf.h - tar (optionally gzip) archives built in memory with libarchive, for the
 * image unit tests. Include after <cmocka.h> and <archive.h>. */
#ifndef CAPSA_IMAGE_TEST_TARBUF_H
#define CAPSA_IMAGE_TEST_TARBUF_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct tarbuf {
    struct archive *a;
    char *data;
    size_t len;
};

static la_ssize_t tb_write(struct archive *a, void *ud, const void *buf, size_t n)
{
    struct tarbuf *t = ud;
    (void)a;
    t->data = realloc(t->data, t->len + n);
    memcpy(t->data + t->len, buf, n);
    t->len += n;
    return (la_ssize_t)n;
}

static void tb_open(struct tarbuf *t, bool gzip)
{
    memset(t, 0, sizeof(*t));
    t->a = archive_write_new();
    archive_write_set_format_pax_restricted(t->a);
    if (gzip)
        archive_write_add_filter_gzip(t->a);
    archive_write_set_bytes_in_last_block(t->a, 1);
    assert_int_equal(archive_write_open(t->a, t, NULL, tb_write, NULL), ARCHIVE_OK);
}

static void tb_close(struct tarbuf *t)
{
    archive_write_close(t->a);
    archive_write_free(t->a);
}

#endif
