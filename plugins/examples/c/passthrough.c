/*
 * c-passthrough: an example sluice transform written in C against sluice_plugin.h.
 * Every input record is pushed to the output unchanged (the host copies it).
 *
 * Build: cc -shared -fPIC -O2 -I plugin-api/include -o libc_passthrough.so passthrough.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_plugin.h"

typedef struct {
  const sl_instance_ctx *ctx;
  unsigned long long batches;
} instance;

static void set_error(sl_error *err, sl_status code, const char *msg) {
  if (!err) return;
  err->code = code;
  size_t n = strlen(msg);
  if (n > sizeof err->msg) n = sizeof err->msg;
  memcpy(err->msg, msg, n);
  err->len = (uint32_t)n;
}

static sl_status create(const sl_instance_ctx *ctx, sl_str config_json, void **self, sl_error *err) {
  /* This plugin takes no options: anything but an empty object is refused. */
  size_t i = 0, j = config_json.len;
  while (i < j && (config_json.ptr[i] == ' ' || config_json.ptr[i] == '{')) i++;
  while (j > i && (config_json.ptr[j - 1] == ' ' || config_json.ptr[j - 1] == '}')) j--;
  if (i < j) {
    set_error(err, SL_ERR_CONFIG, "c-passthrough takes no options");
    return SL_ERR_CONFIG;
  }
  instance *inst = calloc(1, sizeof *inst);
  if (!inst) {
    set_error(err, SL_ERR_FATAL, "out of memory");
    return SL_ERR_FATAL;
  }
  inst->ctx = ctx;
  *self = inst;
  return SL_OK;
}

static sl_status start(void *self, sl_error *err) {
  (void)err;
  instance *inst = self;
  const char msg[] = "c-passthrough started";
  sl_str s = {(const uint8_t *)msg, sizeof msg - 1};
  if (inst->ctx->host->log) inst->ctx->host->log(inst->ctx->inst, SL_LOG_INFO, s);
  return SL_OK;
}

static sl_status stop(void *self, uint32_t deadline_ms, sl_error *err) {
  (void)self; (void)deadline_ms; (void)err;
  return SL_OK;
}

static void destroy(void *self) { free(self); }

static sl_status transform(void *self, const sl_batch *in, sl_batch_builder *out, sl_error *err) {
  instance *inst = self;
  inst->batches++;
  const uint8_t *base = (const uint8_t *)in->records;
  for (size_t i = 0; i < in->len; i++) {
    const sl_record *r = (const sl_record *)(base + i * in->record_stride);
    sl_status st = out->push(out->host, i, r, (uint32_t)sizeof *r);
    if (st < 0) {
      set_error(err, SL_ERR_FATAL, "host refused a record");
      return SL_ERR_FATAL;
    }
  }
  return SL_OK;
}

static const sl_plugin_vtable VTABLE = {
    .struct_size = sizeof(sl_plugin_vtable),
    .create = create,
    .start = start,
    .stop = stop,
    .destroy = destroy,
    .transform = transform,
};

#define STR(s) {(const uint8_t *)(s), sizeof(s) - 1}

static const sl_plugin_def PLUGINS[] = {{
    .struct_size = sizeof(sl_plugin_def),
    .kind = SL_KIND_TRANSFORM,
    .name = STR("c-passthrough"),
    .version = STR("1.0.0"),
    .description = STR("outputs every record unchanged (C example)"),
    .vtable = &VTABLE,
}};

#ifndef FIXTURE_MAGIC
#define FIXTURE_MAGIC SL_MAGIC
#endif
#ifndef FIXTURE_MAJOR
#define FIXTURE_MAJOR SL_ABI_MAJOR
#endif
#ifndef FIXTURE_SIZE
#define FIXTURE_SIZE sizeof(sl_library)
#endif
#ifndef FIXTURE_MIN_HOST_MINOR
#define FIXTURE_MIN_HOST_MINOR 0
#endif
#ifndef FIXTURE_SYMBOL
#define FIXTURE_SYMBOL sl_plugin_library_v1
#endif

static const sl_library LIBRARY = {
    .magic = FIXTURE_MAGIC,
    .struct_size = FIXTURE_SIZE,
    .abi_major = FIXTURE_MAJOR,
    .abi_minor = SL_ABI_MINOR,
    .min_host_minor = FIXTURE_MIN_HOST_MINOR,
    .flags = 0,
    .library_name = STR("c-passthrough"),
    .library_version = STR("1.0.0"),
    .build_info = STR("C example"),
    .plugins = PLUGINS,
    .plugin_count = 1,
};

/* The refusal fixtures used in tests are this same file built with -DFIXTURE_... flags:
 * a wrong magic, ABI major 2, a descriptor too small, a newer required host minor, or the
 * entry symbol exported under another ABI's name. */
const sl_library *FIXTURE_SYMBOL(void) { return &LIBRARY; }
