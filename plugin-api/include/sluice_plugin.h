/*
 * sluice_plugin.h — the sluice plugin ABI, version 1.1. This header is normative: the Rust
 * mirror in plugin-api/src/ffi.rs is checked against it by plugin-api/tests/layout.rs.
 *
 * Rules (DESIGN.md "Plugin ABI"):
 *  - One exported symbol per library: sl_plugin_library_v1, returning static data.
 *  - Every struct and vtable starts with its size (struct_size) and only grows at the end;
 *    a field or function past the other side's struct_size is treated as absent (NULL).
 *  - sl_bytes / sl_str are borrowed views; memory is freed only by the side that allocated it.
 *    Input batches are host-owned views; output records are copied by the host's builder;
 *    errors are written into a host-owned sl_error.
 *  - An instance is never called concurrently. create/start/stop/destroy may block;
 *    poll_batch/submit/submit_object/ack must not block; transform is CPU-bound and runs on
 *    a host worker thread.
 *  - Host API functions are thread-safe, non-blocking and never re-enter plugin code.
 */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_ABI_MAJOR 1
#define SL_ABI_MINOR 1
#define SL_MAGIC 0x31504C53u /* "SLP1" little-endian */

/* Status codes. Any unknown negative value is treated as SL_ERR_FATAL. */
typedef int32_t sl_status;
#define SL_OK 0
#define SL_PENDING 1           /* nothing now: call notify() when ready (or set poll_delay_ms) */
#define SL_EOF 2               /* a source has no more records, ever */
#define SL_ERR_CONFIG (-1)     /* invalid configuration (create only) */
#define SL_ERR_RETRYABLE (-2)  /* try again later (honour retry_after_ms) */
#define SL_ERR_FATAL (-3)      /* the instance is broken: the pipeline restarts it */
#define SL_ERR_PANIC (-4)      /* a panic was caught: the instance is poisoned */
#define SL_ERR_UNSUPPORTED (-5)

/* Plugin kinds. */
typedef uint32_t sl_kind;
#define SL_KIND_SOURCE 1u
#define SL_KIND_TRANSFORM 2u
#define SL_KIND_SINK 3u

/* sl_plugin_def.flags */
#define SL_DEF_OBJECT_SINK 1u  /* a sink that takes flushed objects (submit_object), not batches */
/* ABI 1.1: a replayable source. It sets a position (SL_RECORD_POSITIONED: `partition` and
 * `sequence` as the offset) on every record it emits, offsets strictly increasing within a
 * partition, and after a restart emits again, with the same positions and bytes, every
 * record of a batch whose ack(token, delivered=true) it did not receive, in the same order
 * per partition. The host then gives its pipeline the intent log: objects are written
 * exactly once across crashes, as for the bundled stream source. Partitions < 65535,
 * offsets < 2^48. */
#define SL_DEF_REPLAYABLE 2u

/* sl_library.flags */
#define SL_LIB_PANICS_CAUGHT 1u /* built with panic=unwind: panics become SL_ERR_PANIC */

/* Log levels for sl_host_api.log. */
#define SL_LOG_ERROR 1
#define SL_LOG_WARN 2
#define SL_LOG_INFO 3
#define SL_LOG_DEBUG 4
#define SL_LOG_TRACE 5

/* Metric kinds for sl_host_api.metric_register. */
#define SL_METRIC_COUNTER 1
#define SL_METRIC_GAUGE 2
#define SL_METRIC_HISTOGRAM 3

/* A borrowed byte view. */
typedef struct sl_bytes {
  const uint8_t *ptr;
  size_t len;
} sl_bytes;

/* A borrowed UTF-8 view, not NUL-terminated. */
typedef sl_bytes sl_str;

/* Host-owned and zeroed before each call; the plugin fills it when it returns an error.
 * `field` names the config key an SL_ERR_CONFIG is about, dotted ("batch.max_records"),
 * so that the daemon can point at file:line:column; empty when not about one key. */
typedef struct sl_error {
  int32_t code;
  uint32_t retry_after_ms;
  uint32_t len;       /* bytes used in msg */
  uint32_t field_len; /* bytes used in field */
  char field[128];
  char msg[1024];
} sl_error;

/* A key/value pair attached to a record (partitionKeyFromLambda keys). */
typedef struct sl_attr {
  sl_str key;
  sl_str value;
} sl_attr;

#define SL_TIMESTAMP_UNSET INT64_MIN

/* sl_record.flags (ABI 1.1) */
#define SL_RECORD_POSITIONED 1u /* `partition` + `sequence` are the record's replay position */

typedef struct sl_record {
  sl_bytes data;
  sl_str partition_key;
  uint64_t sequence;     /* position in the source: the offset when SL_RECORD_POSITIONED;
                            otherwise a stable non-zero id a source may set, 0 = host numbers */
  int64_t timestamp_ms;  /* arrival time, ms since the Unix epoch; SL_TIMESTAMP_UNSET = unset */
  const sl_attr *attrs;
  uint32_t attrs_len;
  uint32_t flags;        /* SL_RECORD_* bits; 0 in ABI 1.0 */
  /* ABI 1.1 (push() record_size and sl_batch.record_stride say whether present): */
  uint32_t partition;    /* the partition of a SL_RECORD_POSITIONED record */
  uint32_t reserved;     /* 0 */
} sl_record;

/* A host-owned, read-only view of records. Iterate with record_stride, not sizeof. */
typedef struct sl_batch {
  uint32_t struct_size;
  uint32_t record_stride;
  const sl_record *records;
  size_t len;
} sl_batch;

/* Host-implemented output. push() copies the record before it returns.
 * `origin` is the index of the input record the output derives from (transforms),
 * or SIZE_MAX for sources. push returns SL_PENDING when a source's credit is exhausted:
 * that record was NOT taken (push it again on the next poll). Transforms have no credit
 * limit; a negative status means the host refused the record (return SL_ERR_FATAL). */
typedef struct sl_batch_builder {
  uint32_t struct_size;
  uint32_t poll_delay_ms; /* out (sources): re-poll after at most this long; 0 = host default */
  void *host;
  sl_status (*push)(void *host, size_t origin, const sl_record *record, uint32_t record_size);
  sl_status (*reject)(void *host, size_t input_index, sl_str reason); /* -> error output */
  uint64_t credit_records;
  uint64_t credit_bytes;
  /* transforms: pass these input records through unchanged, in this order, without copying
   * them through push (the cheap path for filters and pass-throughs). */
  sl_status (*keep)(void *host, const uint32_t *input_indexes, size_t n);
} sl_batch_builder;

/* A flushed object for object sinks. The body is either in memory (body) or in a spool
 * file (body_path, non-empty); both stay valid until complete(ticket). */
typedef struct sl_object {
  uint32_t struct_size;
  uint32_t flags;
  sl_str key;
  sl_str content_type;
  sl_str content_encoding;
  uint64_t record_count;
  int64_t oldest_timestamp_ms;
  sl_bytes body;
  sl_str body_path;
} sl_object;

typedef struct sl_host_api {
  uint32_t struct_size;
  uint16_t abi_major;
  uint16_t abi_minor;
  bool (*log_enabled)(int32_t level);
  void (*log)(const void *inst, int32_t level, sl_str msg);
  sl_status (*metric_register)(const void *inst, int32_t kind, sl_str name, sl_str help,
                               const sl_str *label_names, size_t n_labels, uint64_t *out_handle);
  sl_status (*metric_bind)(uint64_t handle, const sl_str *label_values, size_t n_values,
                           uint64_t *out_child);
  void (*metric_record)(uint64_t handle, double value);
  void (*notify)(const void *inst); /* "poll/submit me again" */
  void (*complete)(const void *inst, uint64_t ticket, sl_status status,
                   const uint32_t *failed_idx, size_t n_failed, const sl_error *err);
} sl_host_api;

/* The struct and its string views are valid from create() until destroy() returns: copy
 * what you need past that. The host table (`host`) stays valid for the life of the
 * process. `inst` is an opaque handle, not a pointer to dereference: sluice checks it on
 * every call, so a call made with it after destroy() (say, a completion from a plugin
 * thread that outlived its instance) is refused, counted in
 * sluice_plugin_late_calls_total, and never touches freed memory. Do not rely on late
 * calls having any effect. */
typedef struct sl_instance_ctx {
  uint32_t struct_size;
  const sl_host_api *host;
  const void *inst; /* pass to host functions */
  sl_str pipeline;
  sl_str component_id;
  sl_str config_dir; /* folder relative paths in the plugin's config resolve against */
} sl_instance_ctx;

typedef struct sl_plugin_vtable {
  uint32_t struct_size;
  /* common */
  sl_status (*create)(const sl_instance_ctx *ctx, sl_str config_json, void **self, sl_error *err);
  sl_status (*start)(void *self, sl_error *err);
  sl_status (*stop)(void *self, uint32_t deadline_ms, sl_error *err);
  void (*destroy)(void *self);
  /* sources */
  sl_status (*poll_batch)(void *self, sl_batch_builder *out, uint64_t *ack_token, sl_error *err);
  void (*ack)(void *self, uint64_t ack_token, sl_status outcome);
  /* transforms */
  sl_status (*transform)(void *self, const sl_batch *in, sl_batch_builder *out, sl_error *err);
  /* record sinks: the batch stays valid until complete(ticket). Returning SL_OK accepts it:
   * the plugin then calls host->complete(inst, ticket, ...) exactly once, during this call
   * or later from any thread, with SL_OK, SL_ERR_RETRYABLE (failed_idx naming the records
   * to resubmit, or none for all) or SL_ERR_FATAL. Returning SL_PENDING (full: call notify
   * when there is room) or an error means not accepted: never complete that ticket. */
  sl_status (*submit)(void *self, const sl_batch *batch, uint64_t ticket, sl_error *err);
  /* object sinks: the object stays valid until complete(ticket); SL_OK, SL_PENDING and
   * errors mean what they mean for submit. */
  sl_status (*submit_object)(void *self, const sl_object *object, uint64_t ticket, sl_error *err);
} sl_plugin_vtable;

typedef struct sl_plugin_def {
  uint32_t struct_size;
  sl_kind kind;
  uint32_t flags;
  uint32_t reserved;
  sl_str name; /* the `plugin = "..."` used in TOML; unique per kind */
  sl_str version;
  sl_str description;
  const sl_plugin_vtable *vtable;
} sl_plugin_def;

typedef struct sl_library {
  uint32_t magic;
  uint32_t struct_size;
  uint16_t abi_major;
  uint16_t abi_minor;
  uint16_t min_host_minor;
  uint16_t flags;
  sl_str library_name;
  sl_str library_version;
  sl_str build_info;
  const sl_plugin_def *plugins;
  uint32_t plugin_count;
  uint32_t reserved;
  sl_status (*init)(const sl_host_api *host, sl_error *err); /* optional, once, after checks */
} sl_library;

/* The only exported symbol. Side-effect free; returns static data. */
const sl_library *sl_plugin_library_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_PLUGIN_H */
