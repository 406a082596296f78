// Package server is the HTTP image-generation service behind "ddpm serve":
// an OpenAI-compatible Images API (POST /v1/images/generations, GET
// /v1/models), a PNG endpoint for curl (POST /v1/generate), asynchronous
// jobs with progress as server-sent events (/v1/jobs), health and readiness
// probes, Prometheus metrics (ddpm_*) and a small embedded web page.
//
// The server runs a model through the small Generator interface, one worker
// per device: DiffusionGenerator for a diffusion.Model sampled by package
// diffusion, FakeGenerator for tests. Requests with equal Settings (steps,
// sampler, eta, guidance, classifier scale, and the same known image when
// they inpaint) are batched dynamically into one model batch of at most Options.MaxBatch
// images; the queue is bounded (a full queue answers 429 with Retry-After);
// every request has a timeout; a client that goes away, or a cancelled job,
// drops out of its batch without stopping the others. Serve drains on
// shutdown: readiness flips, new work is refused, jobs get
// Options.DrainTimeout to finish and are cancelled after that.
//
// A request may inpaint (ModelInfo.Inpaint; every DiffusionGenerator
// does): init_image and mask are PNGs as base64 or data URLs, checked from
// their header (at most MaxInputSide pixels a side) before their pixels
// are decoded, and fitted to the model's size as "ddpm sample
// --init-image --mask" fits them; mask white keeps init_image, black is
// generated. The sampler keeps the known region (diffusion.Options Image
// and Mask), or on GLIDE's inpainting model the model does
// (DiffusionGenerator.SetTextInpaint). Bad ones are 400s naming the field.
//
// Errors use the OpenAI shape {"error": {"message", "type", "param",
// "code"}}: 400 for a body that does not parse, 422 for a value out of
// bounds, 401 for a bad API key, 404 for an unknown job or model, 408 for a
// body slower than Options.BodyTimeout, 413 for one over the limit, 415
// for a POST that is not application/json, 429 for a full queue, 503 while
// draining, 504 on timeout; bad input never yields a 5xx.
//
// Untrusted clients are bounded: the API key is checked on the headers
// before any body byte is read; header, body, idle and write timeouts and
// caps on open connections (in all and per client address) apply under
// Serve; request bodies decode with exact keys into one JSON object; metric
// labels come from closed sets; X-Forwarded-For counts only from
// Options.TrustedProxies; CORS is off unless Options.CORSOrigins names
// origins.
//
// Serving on many machines: NewCluster keeps the queue and the jobs in
// Redis (github.com/redis/go-redis/v9), so that stateless api replicas
// (RoleAPI: validate, queue, answer every endpoint for any job, the 429
// bound being the cluster's queue length) and GPU workers (RoleWorker:
// take jobs, batch them dynamically, publish progress, store the images)
// scale apart; RoleAll is both in one process. The queue is a stream with
// a consumer group; a job is a hash fenced by (owner, attempts), its images
// a list with a TTL; progress and cancels travel by pub/sub. A worker that
// stops heartbeating leaves its entries pending, and after
// ClusterOptions.ClaimIdle another worker claims them (XAUTOCLAIM) and runs
// them again from the start with the same seeds, so the images are the
// same; a job whose workers die MaxAttempts times fails. While Redis is
// unreachable, answers are 503 and /readyz fails; the client reconnects by
// itself. redis_store.go documents the keys.
//
// Files: server.go (Server, routes, the handler wrapper), options.go,
// middleware.go (metrics, auth, CORS, body reading, client address),
// conns.go (connection caps), images.go and jobs.go (the endpoints),
// request.go (decoding and validation), inpaint.go (init_image and
// mask), scheduler.go (queue and batching),
// generator.go and diffusiongen.go (the Generator and its real and fake
// implementations), metrics.go, errors.go; cluster.go (NewCluster, roles,
// options, metrics), redis_store.go (keys and Lua scripts), cluster_api.go
// (the endpoints over Redis), cluster_worker.go (pull, claim, heartbeat,
// mirror, hand-back), cluster_hub.go (pub/sub).
package server
