"""The OpenAPI 3.1 description served at /api/openapi.json; the API tests check each path is listed here."""
from __future__ import annotations

from shared.limits import MAX_TITLE
from shared.jobs import REVIEW_FILTERS
from shared.models import STATUSES
from shared.scoring import LABELS

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_UPLOAD = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                                 "description": "one part per file; the part's filename may carry its folder path"}},
        "required": ["files"],
    }}},
}


def _link(operation: str, description: str, **parameters: str) -> dict:
    return {"operationId": operation, "description": description, "parameters": parameters}


# Where a job's id in an answer goes in the next request (OpenAPI links: clients, and the stateful contract
# test, follow them from a job to its results, files, cancel and delete).
_JOB = {"path.job_id": "$response.body#/id"}
_JOB_LINKS = {
    "GetJob": _link("getJob", "the job's progress", **_JOB),
    "GetResults": _link("getResults", "the job's results", **_JOB),
    "AddFiles": _link("addFiles", "more files for the job", **_JOB),
    "CancelJob": _link("cancelJob", "stop the job", **_JOB),
    "DeleteJob": _link("deleteJob", "delete the job", **_JOB),
    "RenameJob": _link("renameJob", "give the job another title", **_JOB),
}
_IMAGE = {"path.job_id": "$response.body#/job_id", "path.image_id": "$response.body#/items/0/id"}
_RESULT_LINKS = {
    "ReviewImage": _link("reviewImage", "a person's verdict on the page's first result", **_IMAGE),
    "GetThumbnail": _link("getThumbnail", "the page's first result's thumbnail", **_IMAGE),
}

# The webhook a job with callback_url gets (shared.webhooks): described here so that receivers can be generated
# and checked against it like any other answer (the webhook test validates what it receives).
_WEBHOOK = {"{$request.query.callback_url}": {"post": {
    "summary": "The job finished (every image classified, failed or cancelled; again, in a new round, when files "
               "are added afterwards). Delivered at least once: use the job id to ignore a repeat",
    "parameters": [
        {"name": "Pixelproof-Signature", "in": "header", "required": True, "schema": {"type": "string",
         "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"}, "description": "t=<unix time>,v1=<hex HMAC-SHA256 of "
         "\"<t>.\" + the raw body, keyed with PIXELPROOF_WEBHOOK_SECRET>; verify it before parsing (README, Webhooks)"},
        {"name": "Pixelproof-Event", "in": "header", "required": True, "schema": {"const": "job.finished"}},
        {"name": "Pixelproof-Attempt", "in": "header", "required": True,
         "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"}, "description": "1 for the first attempt"}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "required": ["event", "job"],
        "properties": {"event": {"const": "job.finished"}, "job": {"$ref": "#/components/schemas/Job"}}}}}},
    "responses": {"2XX": {"description": "received; any other answer, or none within the timeout, is retried with "
                                         "exponential backoff"}}}}}

_ACCEPTED = {
    "description": "stored and queued; Location names the job. A request repeated with the same Idempotency-Key "
                   "gets the job the first one made (with Idempotent-Replayed: true), and nothing is added twice",
    "headers": {"Location": {"schema": {"type": "string"}}, "Idempotent-Replayed": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
    "links": _JOB_LINKS,
}

_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
                "description": "any unique string per logical request (a UUID): a retry after a timeout with the "
                               "same key and the same files returns the same job instead of making a second one or "
                               "adding files twice (422 for the same key with another request or other files); "
                               "a key is remembered as long as its job exists"}
_CALLBACK_URL = {"name": "callback_url", "in": "query", "schema": {"type": "string"},
                 "description": "POST the job's summary here, signed, when it finishes; must be under an address in "
                                "the server's PIXELPROOF_WEBHOOK_ALLOWLIST"}
_TITLE = {"type": "string", "maxLength": MAX_TITLE, "description": "what the job is called, shown wherever jobs "
          "are listed (the page and `pixelproof submit` use the folder's name); runs of white space become one "
          "space, other unprintable characters are dropped, and an empty title is none"}
_TITLE_ARG = {"name": "title", "in": "query", "schema": _TITLE}
_LIMITS = ("max_file_bytes", "max_request_bytes", "max_files_per_request", "max_files_per_job", "max_pixels")
_IMAGE_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_JOB_RESPONSE = {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
                 "links": _JOB_LINKS}


def _one_or_more(*words: str) -> str:
    """A comma-separated list of the words, as the filters take them (empty: no filter)."""
    one = "(" + "|".join(words) + ")"
    return f"^({one}(,{one})*)?$"


_FILTERS = [
    {"name": "label", "in": "query", "schema": {"type": "string", "pattern": _one_or_more(*LABELS)},
     "description": "only these labels: real, fake, "
     "uncertain (comma-separated)"},
    {"name": "status", "in": "query",
     "schema": {"type": "string", "pattern": _one_or_more(*STATUSES)},
     "description": "only these statuses: queued, "
     "running, done, error, cancelled (comma-separated)"},
    {"name": "review", "in": "query", "schema": {"type": "string", "pattern": _one_or_more(*REVIEW_FILTERS)},
     "description": "only results a person gave one of these verdicts (real, fake, unsure), or none: not "
                    "reviewed yet (comma-separated)"},
    {"name": "p_min", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1},
     "description": "only p_fake >= p_min"},
    {"name": "p_max", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1},
     "description": "only p_fake <= p_max"},
    {"name": "name", "in": "query", "schema": {"type": "string", "maxLength": 1024},
     "description": "only files whose name or folder path contains this text, letters in any case; % and _ "
                    "are plain characters"},
    {"name": "changed", "in": "query", "schema": {"type": "boolean"},
     "description": "in a rerun (rerun_of not null; 400 otherwise): only the files whose label differs from the "
                    "earlier job's, both classified"},
    {"name": "sort", "in": "query", "schema": {"enum": ["id", "p_fake", "-p_fake", "filename", "-filename"]},
     "description": "order (a leading - for descending; ties by id); images without p_fake sort as -1. The cursor "
                    "of a page belongs to its sort"},
]

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "Pixelproof", "version": "1", "description": (
        "Classify images as real photos or AI-generated, in batches. Each result has `p_fake`, the calibrated "
        "P(AI-generated), and a `label`: `fake` when p_fake >= `fake_from`, `real` when p_fake < `real_below`, "
        "`uncertain` in between. Both thresholds come from the model's checkpoint, where they were chosen on "
        "validation data so that few real photos (about 1 in 100) are labelled `fake`, and each result carries "
        "the ones it was labelled by. A crop-based model scores a grid of crops at the image's own resolution; "
        "`regions` lists each crop's box (pixels of the upright image) and P(AI-generated), and p_fake comes from "
        "the mean of the crops' logits. Checkpoints without three-label thresholds have real_below == fake_from.")},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                      "required": ["error", "status"]},
            "Job": {"type": "object", "additionalProperties": False, "required": [
                "id", "status", "total", "done", "errors", "cancelled", "queued", "running", "counts", "declared_ai",
                "encodings", "created_at", "updated_at", "finished_at", "cancelled_at", "rerun_of", "model", "models",
                "callback", "title", "reviews"],
                    "properties": {
                "id": {"type": "string"}, "status": {"enum": ["queued", "running", "done", "cancelled"]},
                "title": {"type": ["string", "null"], "maxLength": MAX_TITLE, "description": "what its owner calls "
                          "it (null: untitled); set when it is made (?title=) or later (PATCH)"},
                "total": {"type": "integer"},
                "done": {"type": "integer", "description": "images that will not change any more: classified, "
                         "failed (errors) or cancelled; total = done + queued + running"},
                "errors": {"type": "integer"}, "cancelled": {"type": "integer"},
                "queued": {"type": "integer"}, "running": {"type": "integer"},
                "cancelled_at": {"type": ["string", "null"], "format": "date-time"},
                "callback": {"$ref": "#/components/schemas/Callback"},
                "declared_ai": {"type": "integer", "description": "files whose metadata or Content Credentials say "
                                "they are AI-generated"},
                "encodings": {"type": "object", "additionalProperties": {"type": "integer"}, "description": (
                    "classified files by encoding (\"JPEG quality 90-94\", \"PNG\", ...): more than one key, and "
                    "verdicts may follow compression as much as origin, so compare them within one encoding")},
                "counts": {"type": "object", "additionalProperties": False, "required": ["real", "fake", "uncertain"],
                           "properties": {"real": {"type": "integer"}, "fake": {"type": "integer"},
                                          "uncertain": {"type": "integer"}}},
                "reviews": {"type": "object", "additionalProperties": False, "required": ["real", "fake", "unsure"],
                            "properties": {"real": {"type": "integer"}, "fake": {"type": "integer"},
                                           "unsure": {"type": "integer"}},
                            "description": "results a person gave each verdict so far (?review=none lists the rest)"},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "rerun_of": {"type": ["string", "null"], "description": "the job whose files this one classifies "
                             "again (POST /api/jobs/{job_id}/rerun); it may have been deleted since"},
                "model": {"$ref": "#/components/schemas/Model"},
                "models": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
            }},
            "JobSummary": {"type": "object", "additionalProperties": False, "required": [
                "id", "status", "total", "done", "errors", "cancelled", "counts", "created_at", "finished_at",
                "cancelled_at", "rerun_of", "title"], "description": "a job as listed: the fields of Job that say how "
                "far it got, what it classifies again, and what it is called",
                "properties": {
                    "id": {"type": "string"}, "title": {"type": ["string", "null"], "maxLength": MAX_TITLE},
                    "status": {"enum": ["queued", "running", "done", "cancelled"]},
                    "total": {"type": "integer"}, "done": {"type": "integer"}, "errors": {"type": "integer"},
                    "cancelled": {"type": "integer"},
                    "counts": {"type": "object", "additionalProperties": False, "required": ["real", "fake", "uncertain"],
                               "properties": {"real": {"type": "integer"}, "fake": {"type": "integer"},
                                              "uncertain": {"type": "integer"}}},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "cancelled_at": {"type": ["string", "null"], "format": "date-time"},
                    "rerun_of": {"type": ["string", "null"]}}},
            "Callback": {"type": ["object", "null"], "description": "the job's webhook (null without "
                         "callback_url): POSTed {event: job.finished, job: <this Job>} when the job finishes, signed "
                         "in the Pixelproof-Signature header (README, Webhooks)", "properties": {
                "url": {"type": "string"},
                "status": {"enum": ["waiting", "pending", "delivered", "failed"],
                           "description": "waiting for the job to finish; pending: being delivered (with retries)"},
                "attempts": {"type": "array", "items": {"type": "object", "properties": {
                    "round": {"type": "integer", "description": "1 + how many times files were added after the "
                              "job had finished"},
                    "attempt": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                    "status_code": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
                    "ms": {"type": "number"}}}}}},
            "Review": {"type": "object", "required": ["verdict"], "properties": {
                "verdict": {"enum": ["real", "fake", "unsure"]},
                "note": {"type": ["string", "null"], "maxLength": 2000}}},
            "Model": {"type": ["object", "null"], "description": "the model that labelled the results, and what "
                      "its checkpoint says it can be trusted on", "additionalProperties": False,
                      "required": ["name", "version", "thresholds", "scope", "limits", "card", "max_false_fake"],
                      "properties": {
                "name": {"type": "string"}, "version": {"type": "string"},
                "thresholds": {"$ref": "#/components/schemas/Thresholds"},
                "scope": {"type": ["string", "null"], "description": "what the model is and how far to trust it"},
                "limits": {"type": "array", "items": {"type": "string"}},
                "card": {"type": ["string", "null"], "description": "path of its model card in the repository"},
                "max_false_fake": {"type": ["number", "null"], "description": (
                    "the share of real photos its fake_from was set to let through, on the data it was calibrated "
                    "on (a deployment's own photos, where it set them: README, Labels and thresholds)")}}},
            "Thresholds": {"type": ["object", "null"], "description": "label = fake if p_fake >= fake_from, "
                           "real if p_fake < real_below, else uncertain",
                           "additionalProperties": False, "required": ["real_below", "fake_from"],
                           "properties": {"real_below": {"type": "number"}, "fake_from": {"type": "number"}}},
            "Evidence": {"type": "object", "additionalProperties": False, "required": ["kind", "says", "strength",
                                                                                    "detail"], "properties": {
                "kind": {"enum": ["content_credentials", "xmp", "exif", "generation_parameters"]},
                "says": {"enum": ["ai", "camera", "edited"]},
                "strength": {"enum": ["strong", "weak"], "description": "strong: a Content Credentials manifest "
                             "whose signature and content hashes validate; weak: tags anyone can write or strip"},
                "detail": {"type": "string"}}},
            "Region": {"type": "object", "description": "one crop the model scored, in pixels of the upright image",
                       "additionalProperties": False, "required": ["x", "y", "w", "h", "p_fake"],
                       "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "w": {"type": "integer"},
                                      "h": {"type": "integer"}, "p_fake": {"type": "number"}}},
            "Result": {"type": "object", "additionalProperties": False, "required": [
                "id", "filename", "sha256", "size_bytes", "status", "label", "p_fake", "real_below", "fake_from", "error",
                "model_version", "image_width", "image_height", "encoding", "regions", "evidence", "evidence_note",
                "review", "review_note", "earlier"], "properties": {
                "id": {"type": "integer"}, "filename": {"type": "string"}, "sha256": {"type": "string"},
                "size_bytes": {"type": "integer"},
                "status": {"enum": ["queued", "running", "done", "error", "cancelled"]},
                "label": {"enum": ["real", "fake", "uncertain", None]},
                "p_fake": {"type": ["number", "null"]},
                "real_below": {"type": ["number", "null"]}, "fake_from": {"type": ["number", "null"]},
                "error": {"type": ["string", "null"]},
                "model_version": {"type": ["string", "null"]},
                "image_width": {"type": ["integer", "null"]}, "image_height": {"type": ["integer", "null"]},
                "encoding": {"type": ["object", "null"], "description": (
                    "how the file was encoded, read from its header and never given to the model: format, and for a "
                    "JPEG quality (the nearest libjpeg quality; quality_exact false for tables of the writer's own), "
                    "chroma and progressive. The model's score moves with compression, so compare verdicts between "
                    "images encoded alike; in CSV: compact JSON"),
                    "additionalProperties": False, "required": ["format"],
                    "properties": {"format": {"enum": ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF", "HEIF"]},
                                   "quality": {"type": ["integer", "null"]},
                                   "quality_exact": {"type": ["boolean", "null"]},
                                   "chroma": {"type": ["string", "null"]},
                                   "progressive": {"type": ["boolean", "null"]},
                                   "lossless": {"type": ["boolean", "null"], "description": "WEBP only"}}},
                "regions": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/Region"},
                            "description": "in CSV: the same list as compact JSON"},
                "evidence": {"type": "array", "items": {"$ref": "#/components/schemas/Evidence"},
                             "description": "what the file says about itself, reported beside p_fake and never "
                                            "mixed into it; in CSV: the same list as compact JSON"},
                "evidence_note": {"type": ["string", "null"],
                                  "description": "metadata that could not be read (the classification is unaffected)"},
                "review": {"enum": ["real", "fake", "unsure", None], "description": "a person's verdict, if any"},
                "review_note": {"type": ["string", "null"]},
                "earlier": {"type": ["object", "null"], "description": "in a rerun: the same file (name and "
                            "content) as the earlier job left it; null in other jobs, and where that job is gone. "
                            "In CSV: compact JSON",
                            "additionalProperties": False, "required": ["status", "label", "p_fake", "model_version"],
                            "properties": {"status": {"enum": ["queued", "running", "done", "error", "cancelled"]},
                                           "label": {"enum": ["real", "fake", "uncertain", None]},
                                           "p_fake": {"type": ["number", "null"]},
                                           "model_version": {"type": ["string", "null"]}}},
            }},
        },
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/api/jobs": {"get": {
            "summary": "The caller's jobs, newest first, with their progress and counts; only with API tokens "
                       "(403 without: a job's id is then what grants access to it, so no list is given out)",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                            "description": "jobs per page (default 50)"},
                           {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 200},
                            "description": "the previous page's next_cursor (absent or empty: the newest jobs)"},
                           {"name": "title", "in": "query", "schema": {"type": "string", "maxLength": MAX_TITLE},
                            "description": "only jobs whose title contains this text, letters in any case (white "
                                           "space tidied as titles are; % and _ are plain characters)"}],
            "responses": {"200": {"description": "a page of jobs", "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/JobSummary"}},
                    "next_cursor": {"type": ["string", "null"]}}}}},
                "links": {"GetJob": _link("getJob", "the page's newest job", **{"path.job_id": "$response.body#/items/0/id"})}},
                          "400": _ERR, "401": _ERR, "403": _ERR}},
                      "post": {"summary": "Create a job from uploaded files", "requestBody": _UPLOAD,
                               "callbacks": {"jobFinished": _WEBHOOK},
                               "parameters": [_IDEMPOTENCY, _CALLBACK_URL, _TITLE_ARG],
                               "responses": {"202": _ACCEPTED, "400": _ERR, "401": _ERR, "403": _ERR, "413": _ERR, "422": _ERR, "429": _ERR, "503": _ERR, "507": _ERR}}},
        "/api/jobs/{job_id}/files": {"post": {"summary": "Add files to a job (send a large folder in several requests)",
                                              "parameters": [_JOB_ID, _IDEMPOTENCY], "requestBody": _UPLOAD,
                                              "responses": {"202": _ACCEPTED, "400": _ERR, "403": _ERR, "404": _ERR, "409": {**_ERR, "description": "the job was cancelled"}, "413": _ERR, "422": _ERR, "429": _ERR, "503": _ERR, "507": _ERR}}},
        "/api/jobs/{job_id}/rerun": {"post": {
            "summary": "Classify a job's files again, with the model the workers serve now, as a new job: the stored "
                       "uploads are used (nothing is sent again) and the earlier job keeps its results; the new "
                       "job's rerun_of names it",
            "callbacks": {"jobFinished": _WEBHOOK},
            "parameters": [_JOB_ID, _IDEMPOTENCY, _CALLBACK_URL,
                           {**_TITLE_ARG, "description": "the new job's title (absent: the earlier job's)"}],
            "responses": {"202": {**_ACCEPTED, "description": "the new job, queued; Location names it. A request "
                                  "repeated with the same Idempotency-Key gets the job the first one made (with "
                                  "Idempotent-Replayed: true)"},
                          "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR, "422": _ERR, "429": _ERR, "503": _ERR}}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "summary": "Cancel a job: its queued images are never classified (status cancelled), finished ones keep "
                       "their results; a cancelled job takes no more files",
            "parameters": [_JOB_ID],
            "responses": {"200": _JOB_RESPONSE, "404": _ERR, "409": {**_ERR, "description": "the job already finished"}}}},
        "/api/jobs/{job_id}/images/{image_id}/review": {"post": {
            "summary": "Record a person's verdict on one result (sending another replaces it); exported in CSV/JSON "
                       "and by `pixelproof export-reviews` for fine-tuning",
            "parameters": [_JOB_ID, _IMAGE_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Review"}}}},
            "responses": {"200": {"description": "the result with its review", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Result"}}}}, "400": _ERR, "404": _ERR}}},
        "/api/jobs/{job_id}": {
          "patch": {
            "summary": "Give a job a title, or another one (null or \"\" removes it); nothing else changes",
            "parameters": [_JOB_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["title"],
                "properties": {"title": {**_TITLE, "type": ["string", "null"]}}}}}},
            "responses": {"200": _JOB_RESPONSE, "400": _ERR, "404": _ERR}},
          "delete": {
            "summary": "Delete a job for good: its rows, and the stored uploads, thumbnails and cached verdicts that "
                       "no other job refers to",
            "parameters": [_JOB_ID],
            "responses": {"200": {"description": "what was deleted", "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "required": ["deleted", "images", "files_removed", "files_kept"],
                "properties": {"deleted": {"type": "string"}, "images": {"type": "integer"},
                                                 "files_removed": {"type": "integer"},
                                                 "files_kept": {"type": "integer", "description": "uploads other "
                                                                "jobs also hold"}}}}},
                                  "links": {"GetJob": _link("getJob", "the deleted job: gone (404)",
                                                            **{"path.job_id": "$response.body#/deleted"})}},
                          "404": _ERR}},
          "get": {
            "summary": "Job status and totals; long-poll with wait and done",
            "parameters": [_JOB_ID,
                           {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1e9},
                            "description": "seconds to hold the request until `done` changes, at most 30 (a longer "
                                           "wait is held 30 s); waiting requests are "
                                           "bounded per web process and per client (429 with Retry-After past them)"},
                           {"name": "done", "in": "query", "schema": {"type": "integer"},
                            "description": "the `done` value the client already has"}],
            "responses": {"200": _JOB_RESPONSE, "400": _ERR, "404": _ERR, "429": _ERR}}},
        "/api/jobs/{job_id}/results": {"get": {
            "summary": "Results, paginated by cursor, or the whole job as a CSV/JSON download",
            "parameters": [_JOB_ID,
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "cursor", "in": "query", "schema": {"type": "string"},
                            "description": "the previous page's next_cursor (absent or empty: the first page)"},
                           {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
                           {"name": "download", "in": "query", "schema": {"type": "boolean"},
                            "description": "true (or 1): the whole job, every page, as an attachment (in JSON, one "
                                           "page holding every result, with next_cursor null)"}, *_FILTERS],
            "responses": {"200": {"description": "a page of results", "content": {
                "application/json": {"schema": {"type": "object", "additionalProperties": False,
                                                "required": ["job_id", "items", "next_cursor"], "properties": {
                    "job_id": {"type": "string"}, "items": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
                    "next_cursor": {"type": ["string", "null"]}}}},
                "text/csv": {"schema": {"type": "string"}}}, "links": _RESULT_LINKS}, "400": _ERR, "404": _ERR}}},
        "/api/jobs/{job_id}/images/{image_id}/thumbnail": {"get": {
            "summary": "A JPEG thumbnail the worker made when it classified the image (uploads are never served "
                       "back, nor decoded by the web); send the token in the Authorization header",
            "parameters": [_JOB_ID, _IMAGE_ID,
                           {"name": "size", "in": "query", "schema": {"type": "integer", "minimum": 16, "maximum": 512},
                            "description": "the smallest stored rendition (128 px on the longer side, and up to 512: a large photo's is one box average, 435-512 px) at least "
                                           "this large is served (default 96: the 128-px one); the aspect ratio is kept"}],
            "responses": {"200": {"description": "JPEG (PNG where an earlier version stored it)",
                                  "content": {"image/jpeg": {}, "image/png": {}}}, "400": _ERR,
                          "404": {**_ERR, "description": "no such image, or it is not classified yet"},
                          "422": {**_ERR, "description": "the file is not a usable image"}}}},
        "/api/config": {"get": {
            "summary": "Limits a client can check before uploading, and the current model's scope (no token needed)",
            "responses": {"200": {"description": "limits and model", "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "required": ["limits", "model", "retention_days", "webhooks"], "properties": {
                    "limits": {"type": "object", "additionalProperties": False, "required": list(_LIMITS),
                               "properties": {k: {"type": "integer"} for k in _LIMITS}},
                    "model": {"$ref": "#/components/schemas/Model"},
                    "retention_days": {"type": ["number", "null"], "description": "jobs are deleted this many days "
                                       "after they were made (null: kept until deleted)"},
                    "webhooks": {"type": "boolean", "description": "whether jobs may give a callback_url"}}}}}}}}},
        "/healthz": {"get": {"summary": "Database and broker reachability",
                             "responses": {"200": {"description": "healthy"}, "503": {"description": "degraded"}}}},
        "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics of every web and worker process (a token is needed "
                                        "when API tokens are on)",
                             "responses": {"200": {"description": "text exposition format"}, "401": _ERR}}},
    },
}

# Each operation's name: client generators name their methods after it, and links refer to it.
_OPERATION_IDS = {
    ("/api/jobs", "get"): "listJobs", ("/api/jobs", "post"): "createJob", ("/api/jobs/{job_id}/files", "post"): "addFiles",
    ("/api/jobs/{job_id}/rerun", "post"): "rerunJob", ("/api/jobs/{job_id}/cancel", "post"): "cancelJob",
    ("/api/jobs/{job_id}/images/{image_id}/review", "post"): "reviewImage",
    ("/api/jobs/{job_id}", "delete"): "deleteJob", ("/api/jobs/{job_id}", "patch"): "renameJob", ("/api/jobs/{job_id}", "get"): "getJob",
    ("/api/jobs/{job_id}/results", "get"): "getResults",
    ("/api/jobs/{job_id}/images/{image_id}/thumbnail", "get"): "getThumbnail", ("/api/config", "get"): "getConfig",
    ("/healthz", "get"): "health", ("/api/openapi.json", "get"): "getOpenAPI", ("/metrics", "get"): "metrics",
}
for (_path, _method), _name in _OPERATION_IDS.items():
    OPENAPI["paths"][_path][_method]["operationId"] = _name
