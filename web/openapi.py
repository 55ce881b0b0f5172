"""The OpenAPI 3.1 description served at /api/openapi.json; the API tests check each path is listed here."""
from __future__ import annotations

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_UPLOAD = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "one part per file; the part's filename may carry its folder path"}},
        "required": ["files"],
    }}},
}
_ACCEPTED = {
    "description": "stored and queued; Location names the job",
    "headers": {"Location": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "Pixelproof", "version": "1", "description": "Classify images as real photos or AI-generated, in batches."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                      "required": ["error", "status"]},
            "Job": {"type": "object", "required": ["id", "status", "total", "done", "errors", "counts"], "properties": {
                "id": {"type": "string"}, "status": {"enum": ["queued", "running", "done"]},
                "total": {"type": "integer"}, "done": {"type": "integer"}, "errors": {"type": "integer"},
                "queued": {"type": "integer"}, "running": {"type": "integer"},
                "counts": {"type": "object", "properties": {"real": {"type": "integer"}, "fake": {"type": "integer"}}},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "model": {"type": ["object", "null"], "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
            }},
            "Result": {"type": "object", "properties": {
                "id": {"type": "integer"}, "filename": {"type": "string"}, "sha256": {"type": "string"},
                "size_bytes": {"type": "integer"},
                "status": {"enum": ["queued", "running", "done", "error"]}, "label": {"enum": ["real", "fake", None]},
                "p_fake": {"type": ["number", "null"]}, "error": {"type": ["string", "null"]},
                "model_version": {"type": ["string", "null"]},
            }},
        },
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/api/jobs": {"post": {"summary": "Create a job from uploaded files", "requestBody": _UPLOAD,
                               "responses": {"202": _ACCEPTED, "400": _ERR, "401": _ERR, "413": _ERR, "429": _ERR, "503": _ERR}}},
        "/api/jobs/{job_id}/files": {"post": {"summary": "Add files to a job (send a large folder in several requests)",
                                              "parameters": [_JOB_ID], "requestBody": _UPLOAD,
                                              "responses": {"202": _ACCEPTED, "400": _ERR, "404": _ERR, "413": _ERR, "503": _ERR}}},
        "/api/jobs/{job_id}": {"get": {
            "summary": "Job status and totals; long-poll with wait and done",
            "parameters": [_JOB_ID,
                           {"name": "wait", "in": "query", "schema": {"type": "number", "maximum": 30},
                            "description": "seconds to hold the request until `done` changes"},
                           {"name": "done", "in": "query", "schema": {"type": "integer"},
                            "description": "the `done` value the client already has"}],
            "responses": {"200": {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                          "404": _ERR}}},
        "/api/jobs/{job_id}/results": {"get": {
            "summary": "Results, paginated by cursor, or the whole job as a CSV/JSON download",
            "parameters": [_JOB_ID,
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                           {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
                           {"name": "download", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "a page of results", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "job_id": {"type": "string"}, "items": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
                    "next_cursor": {"type": ["string", "null"]}}}},
                "text/csv": {"schema": {"type": "string"}}}}, "400": _ERR, "404": _ERR}}},
        "/api/jobs/{job_id}/images/{image_id}/thumbnail": {"get": {
            "summary": "A re-encoded PNG thumbnail",
            "parameters": [_JOB_ID, {"name": "image_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "PNG", "content": {"image/png": {}}}, "404": _ERR, "422": _ERR}}},
        "/healthz": {"get": {"summary": "Database and broker reachability",
                             "responses": {"200": {"description": "healthy"}, "503": {"description": "degraded"}}}},
        "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
    },
}
