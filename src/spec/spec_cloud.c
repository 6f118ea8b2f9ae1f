/* spec_cloud.c - schema tables of the seed's Cloud* REST types (request, sandbox, status,
 * pagination, message and error bodies). Optional fields (`field?` in the seed) are written
 * only when they hold a value. */
#include <string.h>

#include "common/cleanup.h"
#include "spec/spec_int.h"

static const char *const statuses[] = {"created", "starting", "running", "stopping",
                                       "stopped", "failed",   NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", "trace", NULL};

static const struct spec_range range_vcpus = {1, 128, NULL};
static const struct spec_range range_memory = {64, 1024 * 1024, "MiB"};
static const struct spec_string str_image_ref = {4096, spec_check_image_ref, false};
static const struct spec_string str_hostname = {64, spec_check_hostname, false};
static const struct spec_string str_uuid = {36, spec_check_uuid, false};
static const struct spec_string str_message = {64 * 1024, NULL, true};
static const struct spec_map map_env = {spec_check_env_key, spec_norm_string, &spec_str_text, 4096};
static const struct spec_map map_scripts = {NULL, spec_norm_string, &spec_str_text, 256};
static const struct spec_array arr_argv = {spec_norm_string, &spec_str_text, 4096};
static const struct spec_array arr_any = {spec_norm_any, NULL, 100000};

#define OPT (SF_OPTIONAL | SF_NULLABLE)

static const struct spec_field create_fields[] = {
    {"name", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"image", spec_norm_string, &str_image_ref, SF_REQUIRED, NULL},
    {"vcpus", spec_norm_int, &range_vcpus, 0, "1"},
    {"memory_mib", spec_norm_int, &range_memory, 0, "512"},
    {"env", spec_norm_map, &map_env, 0, "{}"},
    {"ephemeral", spec_norm_bool, NULL, 0, "false"},
    {"workdir", spec_norm_guest_path, NULL, OPT, NULL},
    {"shell", spec_norm_string, &spec_str_any, OPT, NULL},
    {"entrypoint", spec_norm_array, &arr_argv, OPT, NULL},
    {"hostname", spec_norm_string, &str_hostname, OPT, NULL},
    {"user", spec_norm_string, &spec_str_any, OPT, NULL},
    {"log_level", spec_norm_enum, log_levels, OPT, NULL},
    {"scripts", spec_norm_map, &map_scripts, SF_OPTIONAL, NULL},
    {"max_duration_secs", spec_norm_int, &spec_range_secs, OPT, NULL},
    {"idle_timeout_secs", spec_norm_int, &spec_range_secs, OPT, NULL},
};
static const struct spec_object obj_create =
    SPEC_OBJECT("CloudCreateSandboxRequest", create_fields, NULL);

static const struct spec_field sandbox_fields[] = {
    {"id", spec_norm_string, &str_uuid, SF_REQUIRED, NULL},
    {"org_id", spec_norm_string, &str_uuid, SF_REQUIRED, NULL},
    {"name", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"status", spec_norm_enum, statuses, SF_REQUIRED, NULL},
    {"config", spec_norm_object, &obj_create, SF_REQUIRED, NULL},
    {"ephemeral", spec_norm_bool, NULL, SF_REQUIRED, NULL},
    {"created_at", spec_norm_string, &spec_str_timestamp, SF_REQUIRED, NULL},
    {"started_at", spec_norm_string, &spec_str_timestamp, OPT, NULL},
    {"stopped_at", spec_norm_string, &spec_str_timestamp, OPT, NULL},
    {"last_error", spec_norm_string, &str_message, OPT, NULL},
};
static const struct spec_object obj_sandbox = SPEC_OBJECT("CloudSandbox", sandbox_fields, NULL);

static const struct spec_field paginated_fields[] = {
    {"data", spec_norm_array, &arr_any, SF_REQUIRED, NULL},
    {"next_cursor", spec_norm_string, &spec_str_any, OPT, NULL},
};
static const struct spec_object obj_paginated =
    SPEC_OBJECT("CloudPaginated", paginated_fields, NULL);

static const struct spec_field message_fields[] = {
    {"message", spec_norm_string, &str_message, SF_REQUIRED, NULL},
};
static const struct spec_object obj_message =
    SPEC_OBJECT("CloudMessageResponse", message_fields, NULL);

static const struct spec_field details_fields[] = {
    {"code", spec_norm_string, &spec_str_any, OPT, NULL},
    {"message", spec_norm_string, &str_message, OPT, NULL},
};
static const struct spec_object obj_details =
    SPEC_OBJECT("CloudErrorDetails", details_fields, NULL);

static const struct spec_field error_fields[] = {
    {"code", spec_norm_string, &spec_str_any, OPT, NULL},
    {"message", spec_norm_string, &str_message, OPT, NULL},
    {"error", spec_norm_object, &obj_details, OPT, NULL},
};
static const struct spec_object obj_error = SPEC_OBJECT("CloudErrorBody", error_fields, NULL);

const struct spec_type spec_cloud_types[] = {
    {"CloudCreateSandboxRequest", spec_norm_object, &obj_create},
    {"CloudSandbox", spec_norm_object, &obj_sandbox},
    {"CloudSandboxStatus", spec_norm_enum, statuses},
    {"CloudPaginated", spec_norm_object, &obj_paginated},
    {"CloudMessageResponse", spec_norm_object, &obj_message},
    {"CloudErrorBody", spec_norm_object, &obj_error},
    {"CloudErrorDetails", spec_norm_object, &obj_details},
};
const size_t spec_cloud_ntypes = ARRAY_SIZE(spec_cloud_types);
