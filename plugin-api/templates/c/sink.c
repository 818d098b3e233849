/*
 * @NAME@: a sluice record-sink plugin in C, made by `sluiced plugin new`. It appends every
 * record, one per line, to the file `path` and syncs it before completing the batch. Make
 * it your own.
 *
 * Build with `make`, copy lib@LIB@.so into one of the daemon's `plugin_dirs` and reload
 * (`systemctl reload sluiced`). Use it in a pipeline file as
 * `sink = { plugin = "@NAME@", path = "out.jsonl" }`. The guide is sluice's
 * plugin-api/README.md.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice_json.h"
#include "sluice_plugin.h"

#define STR(s) {(const uint8_t *)(s), sizeof(s) - 1}

typedef struct {
  const sl_instance_ctx *ctx; /* valid until destroy() returns */
  char path[4096];
  FILE *file;
} appender;

static sl_status create(const sl_instance_ctx *ctx, sl_str config, void **self, sl_error *err) {
  static const char *const KNOWN[] = {"path", NULL};
  char bad[128], path[2048];
  int u = sl_json_unknown_key(config, KNOWN, bad, sizeof bad);
  if (u < 0) return sl_fail(err, SL_ERR_CONFIG, NULL, "the options are not a JSON object");
  if (u > 0) return sl_fail(err, SL_ERR_CONFIG, bad, "unknown option (known: path)");
  int f = sl_json_string(config, "path", path, sizeof path);
  if (f <= 0 || path[0] == '\0')
    return sl_fail(err, SL_ERR_CONFIG, "path", "must name a file");
  appender *a = calloc(1, sizeof *a);
  if (!a) return sl_fail(err, SL_ERR_FATAL, NULL, "out of memory");
  a->ctx = ctx;
  /* Relative paths are taken against the folder of the daemon's config file. */
  int n;
  if (path[0] == '/' || ctx->config_dir.len == 0)
    n = snprintf(a->path, sizeof a->path, "%s", path);
  else
    n = snprintf(a->path, sizeof a->path, "%.*s/%s", (int)ctx->config_dir.len,
                 (const char *)ctx->config_dir.ptr, path);
  if (n < 0 || (size_t)n >= sizeof a->path) {
    free(a);
    return sl_fail(err, SL_ERR_CONFIG, "path", "is too long");
  }
  *self = a;
  return SL_OK;
}

/* Opens the file: create() also runs for `sluiced check`, which must touch nothing. */
static sl_status start(void *self, sl_error *err) {
  appender *a = self;
  a->file = fopen(a->path, "a");
  if (!a->file) return sl_fail(err, SL_ERR_FATAL, NULL, strerror(errno));
  return SL_OK;
}

static sl_status stop(void *self, uint32_t deadline_ms, sl_error *err) {
  (void)deadline_ms; (void)err;
  appender *a = self;
  if (a->file) fflush(a->file);
  return SL_OK;
}

static void destroy(void *self) {
  appender *a = self;
  if (a->file) fclose(a->file);
  free(a);
}

/* One batch in flight at a time; must not block for long. Accepting the batch (returning
 * SL_OK) promises exactly one host->complete(ticket) — here, or later from another thread
 * while the batch stays valid. Return SL_PENDING (and no complete) when full: the host
 * submits again after notify() or a short wait. An error return means "not accepted" and
 * no complete either. */
static sl_status submit(void *self, const sl_batch *batch, uint64_t ticket, sl_error *err) {
  (void)err;
  appender *a = self;
  const sl_host_api *h = a->ctx->host;
  const uint8_t *base = (const uint8_t *)batch->records;
  int ok = 1;
  for (size_t i = 0; ok && i < batch->len; i++) {
    const sl_record *r = (const sl_record *)(base + i * batch->record_stride);
    ok = fwrite(r->data.ptr, 1, r->data.len, a->file) == r->data.len && fputc('\n', a->file) != EOF;
  }
  ok = ok && fflush(a->file) == 0 && fsync(fileno(a->file)) == 0;
  if (ok) {
    h->complete(a->ctx->inst, ticket, SL_OK, NULL, 0, NULL);
  } else {
    /* Retryable: the host resubmits the batch with backoff. (To retry only some records,
     * pass their indexes in failed_idx.) */
    sl_error e;
    memset(&e, 0, sizeof e);
    sl_fail(&e, SL_ERR_RETRYABLE, NULL, strerror(errno));
    h->complete(a->ctx->inst, ticket, SL_ERR_RETRYABLE, NULL, 0, &e);
  }
  return SL_OK;
}

static const sl_plugin_vtable VTABLE = {
    .struct_size = sizeof(sl_plugin_vtable),
    .create = create,
    .start = start,
    .stop = stop,
    .destroy = destroy,
    .submit = submit,
};

static const sl_plugin_def PLUGINS[] = {{
    .struct_size = sizeof(sl_plugin_def),
    .kind = SL_KIND_SINK,
    .name = STR("@NAME@"),
    .version = STR("0.1.0"),
    .description = STR("appends records, one per line, to a file"),
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
