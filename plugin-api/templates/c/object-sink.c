/*
 * @NAME@: a sluice object-sink plugin in C, made by `sluiced plugin new`. It stores every
 * flushed object (partitioned, buffered and compressed by the host, as Firehose does) as
 * the file dir/<key>, written to a temporary name, synced and renamed, so a reader never
 * sees half an object. Make it your own.
 *
 * Build with `make`, copy lib@LIB@.so into one of the daemon's `plugin_dirs` and reload
 * (`systemctl reload sluiced`). Use it in a pipeline file as
 * `sink = { plugin = "@NAME@", dir = "lake" }` (with `prefix`, `partitioning`, `buffer` and
 * `compression` as for `object-store`). The guide is sluice's plugin-api/README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice_json.h"
#include "sluice_plugin.h"

#define STR(s) {(const uint8_t *)(s), sizeof(s) - 1}

typedef struct {
  const sl_instance_ctx *ctx;
  char dir[2048];
} dir_writer;

static sl_status create(const sl_instance_ctx *ctx, sl_str config, void **self, sl_error *err) {
  static const char *const KNOWN[] = {"dir", NULL};
  char bad[128], dir[1024];
  int u = sl_json_unknown_key(config, KNOWN, bad, sizeof bad);
  if (u < 0) return sl_fail(err, SL_ERR_CONFIG, NULL, "the options are not a JSON object");
  if (u > 0) return sl_fail(err, SL_ERR_CONFIG, bad, "unknown option (known: dir)");
  int f = sl_json_string(config, "dir", dir, sizeof dir);
  if (f <= 0 || dir[0] == '\0') return sl_fail(err, SL_ERR_CONFIG, "dir", "must name a folder");
  dir_writer *w = calloc(1, sizeof *w);
  if (!w) return sl_fail(err, SL_ERR_FATAL, NULL, "out of memory");
  w->ctx = ctx;
  int n;
  if (dir[0] == '/' || ctx->config_dir.len == 0)
    n = snprintf(w->dir, sizeof w->dir, "%s", dir);
  else
    n = snprintf(w->dir, sizeof w->dir, "%.*s/%s", (int)ctx->config_dir.len,
                 (const char *)ctx->config_dir.ptr, dir);
  if (n < 0 || (size_t)n >= sizeof w->dir) {
    free(w);
    return sl_fail(err, SL_ERR_CONFIG, "dir", "is too long");
  }
  *self = w;
  return SL_OK;
}

static sl_status start(void *self, sl_error *err) {
  (void)self; (void)err;
  return SL_OK;
}

static sl_status stop(void *self, uint32_t deadline_ms, sl_error *err) {
  (void)self; (void)deadline_ms; (void)err;
  return SL_OK;
}

static void destroy(void *self) { free(self); }

/* mkdir -p of every folder in `path` before its last '/'. */
static int make_parents(char *path) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    int r = mkdir(path, 0755);
    *p = '/';
    if (r != 0 && errno != EEXIST) return -1;
  }
  return 0;
}

/* Keys come from the host's prefixes (values Hive-escaped); refuse any that would leave dir. */
static int safe_key(const char *key, size_t n) {
  if (n == 0 || key[0] == '/' || key[n - 1] == '/') return 0;
  for (size_t i = 0; i < n; i++) {
    size_t seg = i;
    while (i < n && key[i] != '/') i++;
    size_t len = i - seg;
    if (len == 0 || (len == 1 && key[seg] == '.') || (len == 2 && key[seg] == '.' && key[seg + 1] == '.'))
      return 0;
  }
  return memchr(key, '\0', n) == NULL;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int store(dir_writer *w, const sl_object *o) {
  char path[4096], tmp[4200];
  if (snprintf(path, sizeof path, "%s/%.*s", w->dir, (int)o->key.len, (const char *)o->key.ptr) >= (int)sizeof path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (make_parents(path) < 0) return -1;
  char *slash = strrchr(path, '/');
  snprintf(tmp, sizeof tmp, "%.*s/.%s.tmp", (int)(slash - path), path, slash + 1);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int ok = 0;
  if (o->body_path.len > 0) {
    /* A large object is spooled to a file by the host: copy it from there. */
    char spool[4096];
    int in = -1;
    if (o->body_path.len < sizeof spool) {
      snprintf(spool, sizeof spool, "%.*s", (int)o->body_path.len, (const char *)o->body_path.ptr);
      in = open(spool, O_RDONLY | O_CLOEXEC);
    } else {
      errno = ENAMETOOLONG;
    }
    if (in < 0) ok = -1;
    uint8_t buf[65536];
    ssize_t n;
    while (ok == 0 && (n = read(in, buf, sizeof buf)) != 0) {
      if (n < 0) {
        if (errno == EINTR) continue;
        ok = -1;
      } else if (write_all(fd, buf, (size_t)n) < 0) {
        ok = -1;
      }
    }
    if (in >= 0) close(in);
  } else {
    ok = write_all(fd, o->body.ptr, o->body.len);
  }
  if (ok == 0) ok = fsync(fd);
  close(fd);
  if (ok == 0) ok = rename(tmp, path);
  if (ok == 0) {
    *slash = '\0';
    int d = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok = d < 0 ? -1 : fsync(d);
    if (d >= 0) close(d);
  } else {
    unlink(tmp);
  }
  return ok;
}

/* One object in flight at a time. SL_OK promises exactly one host->complete(ticket); a
 * retryable failure is retried by the host with backoff (after `retry_duration`, the
 * object's records go to the error output). */
static sl_status submit_object(void *self, const sl_object *o, uint64_t ticket, sl_error *err) {
  (void)err;
  dir_writer *w = self;
  const sl_host_api *h = w->ctx->host;
  sl_error e;
  memset(&e, 0, sizeof e);
  if (!safe_key((const char *)o->key.ptr, o->key.len)) {
    sl_fail(&e, SL_ERR_FATAL, NULL, "object key leaves the folder");
    h->complete(w->ctx->inst, ticket, SL_ERR_FATAL, NULL, 0, &e);
  } else if (store(w, o) < 0) {
    sl_fail(&e, SL_ERR_RETRYABLE, NULL, strerror(errno));
    h->complete(w->ctx->inst, ticket, SL_ERR_RETRYABLE, NULL, 0, &e);
  } else {
    h->complete(w->ctx->inst, ticket, SL_OK, NULL, 0, NULL);
  }
  return SL_OK;
}

static const sl_plugin_vtable VTABLE = {
    .struct_size = sizeof(sl_plugin_vtable),
    .create = create,
    .start = start,
    .stop = stop,
    .destroy = destroy,
    .submit_object = submit_object,
};

static const sl_plugin_def PLUGINS[] = {{
    .struct_size = sizeof(sl_plugin_def),
    .kind = SL_KIND_SINK,
    .flags = SL_DEF_OBJECT_SINK,
    .name = STR("@NAME@"),
    .version = STR("0.1.0"),
    .description = STR("stores each flushed object as a file below dir"),
    .vtable = &VTABLE,
}};

static const sl_library LIBRARY = {
    .magic = SL_MAGIC,
    .struct_size = sizeof(sl_library),
    .abi_major = SL_ABI_MAJOR,
    .abi_minor = SL_ABI_MINOR,
    .library_name = STR("@NAME@"),
    .library_version = STR("0.1.0"),
    .build_info = STR("C"),
    .plugins = PLUGINS,
    .plugin_count = 1,
};

const sl_library *sl_plugin_library_v1(void) { return &LIBRARY; }
