// Pixelproof page: upload a folder in several requests, long-poll the job, then list the results.
"use strict";
(() => {
  const FILES_PER_REQUEST = 200;
  const $ = (id) => document.getElementById(id);
  const tokenInput = $("token");
  tokenInput.value = localStorage.getItem("pixelproof-token") || "";
  tokenInput.addEventListener("change", () => localStorage.setItem("pixelproof-token", tokenInput.value));

  function headers() {
    const t = tokenInput.value.trim();
    return t ? { Authorization: "Bearer " + t } : {};
  }

  let limits = null;  // from /api/config: what the server will refuse, checked here before uploading
  let servedModel = null;  // from /api/config: the model the workers serve now (what a rerun would use)
  let shownJob = null;  // the job the page shows, as last rendered

  // "1 error", "3 errors"
  const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function mib(n) {
    return n < 1048576 ? `${Math.ceil(n / 1024)} KiB` : `${(n / 1048576).toFixed(n < 10485760 ? 1 : 0)} MiB`;
  }

  function showScope(model) {
    if (!model || !model.scope) return;
    $("scope-text").textContent = model.scope;
    const ul = $("scope-limits");
    ul.textContent = "";
    for (const line of model.limits || []) {
      const li = document.createElement("li");
      li.textContent = line;
      ul.appendChild(li);
    }
    $("scope-model").textContent = model.version + (model.card ? ` (its card: ${model.card})` : "");
    $("scope").hidden = false;
  }

  async function loadConfig() {
    try {
      const config = await api("/api/config");
      limits = config.limits;
      servedModel = config.model;
      // The shown job's model, when it has one, is what its verdicts came from: its scope stays.
      showScope(shownJob && shownJob.model ? shownJob.model : config.model);
      if (shownJob) showRerun(shownJob);
      if (config.retention_days) {
        $("retention").textContent = `This server deletes jobs, their results and their uploads ` +
          `${config.retention_days} days after they are made.`;
        $("retention").hidden = false;
      }
    } catch (_) { /* an older server: nothing is checked before upload */ }
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  async function api(url, method = "GET", payload = undefined) {
    const opts = { method, headers: headers() };
    if (payload !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(payload);
    }
    const resp = await fetch(url, opts);
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(body.error || resp.statusText);
      err.status = resp.status;
      err.retryAfter = Number(resp.headers.get("Retry-After")) || 0;
      throw err;
    }
    return body;
  }

  // Tokens travel in a header only, never in a URL (logs, history, Referer): images and downloads are fetched
  // with the header and handed to the page as blob: URLs.
  async function blobUrl(url) {
    const resp = await fetch(url, { headers: headers() });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return URL.createObjectURL(await resp.blob());
  }

  async function showImage(img, url) {
    try {
      img.src = await blobUrl(url);
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    } catch (_) { img.alt = "no thumbnail"; }
  }

  // Thumbnails load as their rows scroll into view, like loading="lazy" would for a plain src.
  const lazy = new IntersectionObserver((seen) => {
    for (const e of seen) {
      if (!e.isIntersecting) continue;
      lazy.unobserve(e.target);
      showImage(e.target, e.target.dataset.src);
    }
  }, { rootMargin: "400px" });

  async function download(url, name) {
    const href = await blobUrl(url);
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  }

  // A key per upload request: sent again after a dropped connection, the server answers with the job the first
  // attempt made instead of adding the files twice (Idempotency-Key).
  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));  // randomUUID needs a secure context; this does not
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function send(url, batch, onProgress) {
    const key = batch.key || newKey();
    for (let attempt = 1; ; attempt++) {
      try {
        return await sendOnce(url, batch, onProgress, key);
      } catch (e) {
        if (!e.retry || attempt >= 3) throw e;
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  }

  // One multipart request; resolves with the job JSON. XHR because fetch has no upload progress.
  function sendOnce(url, batch, onProgress, key) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const { file, path } of batch) form.append("files", file, path);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
      xhr.setRequestHeader("Idempotency-Key", key);
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status === 202) resolve(body);
        // The queue is down, but the files are stored in the job and will be queued when it is back.
        else if (xhr.status === 503 && body.job) resolve({ id: body.job, warning: body.error });
        else {
          const err = new Error(body.error || `upload failed (HTTP ${xhr.status})`);
          err.status = xhr.status;
          err.retry = xhr.status === 502 || xhr.status === 504;  // a proxy gave up: the server may have it
          reject(err);
        }
      };
      xhr.onerror = () => reject(Object.assign(new Error("the server could not be reached"), { retry: true }));
      xhr.send(form);
    });
  }

  // Files the server would refuse whole requests for are left out here and listed, so the rest is classified.
  function skipRefused(entries) {
    if (!limits) return { keep: entries, skipped: [] };
    const keep = [], skipped = [];
    for (const e of entries) {
      if (e.file.size > limits.max_file_bytes) {
        skipped.push(`${e.path} (${mib(e.file.size)}, over the ${mib(limits.max_file_bytes)} limit per file)`);
      } else keep.push(e);
    }
    return { keep, skipped };
  }

  function showSkipped(skipped) {
    $("skipped").hidden = !skipped.length;
    $("skipped-text").textContent = `${skipped.length} file${skipped.length === 1 ? " was" : "s were"} not uploaded:`;
    const ul = $("skipped-list");
    ul.textContent = "";
    for (const line of skipped) {
      const li = document.createElement("li");
      li.textContent = line;
      ul.appendChild(li);
    }
  }

  // Requests of at most FILES_PER_REQUEST files and about half the server's request limit in bytes.
  function batches(entries) {
    const maxBytes = limits ? limits.max_request_bytes / 2 : 256 * 1048576;
    const maxFiles = limits ? Math.min(FILES_PER_REQUEST, limits.max_files_per_request) : FILES_PER_REQUEST;
    const out = [];
    let batch = [], bytes = 0;
    for (const e of entries) {
      if (batch.length && (batch.length >= maxFiles || bytes + e.file.size > maxBytes)) {
        out.push(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(e);
      bytes += e.file.size;
    }
    if (batch.length) out.push(batch);
    return out;
  }

  // A job made from one folder is titled by its name, as `pixelproof submit` titles it; loose files are untitled.
  function folderName(entries) {
    const top = entries[0].path.includes("/") ? entries[0].path.split("/")[0] : "";
    return top && entries.every((e) => e.path.startsWith(top + "/")) ? top.slice(0, 200) : null;
  }

  // After the first request, which makes the job, this many go up at once: the workers classify one request's
  // images while the web receives the next (`pixelproof submit` does the same; benchmarks/RESULTS.md).
  const PARALLEL_UPLOADS = 2;

  async function upload(all) {
    // The server's limits decide how the files are split into requests: files chosen before /api/config
    // answered (a quick drop, a slow link) were sent as one request the server then refused whole. Asked again
    // here when the first try failed (a token entered since).
    await configLoaded;
    if (!limits) await loadConfig();
    const { keep: entries, skipped } = skipRefused(all);
    showSkipped(skipped);
    $("error").hidden = true;
    if (!entries.length) {  // a dragged link or text, an empty folder: said, not silently ignored
      showError(skipped.length ? "nothing to upload: every file is over the limit"
        : "nothing to upload: no files in what was given");
      return;
    }
    $("progress").hidden = false;
    $("upload-row").hidden = false;
    clearResults();
    const queue = batches(entries);
    for (const batch of queue) batch.key = newKey();  // kept if the batch is sent again ("Send the rest")
    const u = { queue, job: null, files: entries.length, sentBytes: 0, sentFiles: 0,
                totalBytes: entries.reduce((n, e) => n + e.file.size, 0) || 1 };
    await sendAll(u, folderName(entries));
  }

  // Every batch of u.queue into one job: the first request makes it (unless u.job is there), then
  // PARALLEL_UPLOADS at a time. A batch that fails goes back to the queue, and once every request in flight has
  // ended, the page offers to send what is left into the same job, each batch with its first Idempotency-Key:
  // one the server had stored after all is answered with the job, not added twice.
  async function sendAll(u, title = null) {
    const sending = new Set();  // the requests in flight: their bytes sent so far and each file's end
    // A file counts as sent once all of its bytes are: the counter and the bar tell the same story.
    function showSent() {
      let bytes = u.sentBytes, files = u.sentFiles;
      for (const r of sending) {
        bytes += r.loaded;
        files += r.ends.filter((end) => end <= r.loaded).length;
      }
      $("upload-bar").value = Math.min(bytes, u.totalBytes) / u.totalBytes;
      $("upload-text").textContent = `${files} / ${u.files} files`;
    }
    let failed = null;
    async function sendBatch(batch) {
      const url = u.job ? `/api/jobs/${u.job.id}/files`
        : "/api/jobs" + (title ? `?title=${encodeURIComponent(title)}` : "");
      const ends = [];
      batch.reduce((n, e) => { ends.push(n + e.file.size); return n + e.file.size; }, 0);
      const r = { loaded: 0, ends };
      sending.add(r);
      let answer;
      try {
        answer = await send(url, batch, (loaded) => { r.loaded = loaded; showSent(); });
      } catch (e) {
        u.queue.unshift(batch);  // not sent, as far as this page knows
        failed = failed || e;  // the other lane sends nothing more; the error is shown once
        throw e;
      } finally {
        sending.delete(r);
        showSent();
      }
      u.sentBytes += ends[ends.length - 1];
      u.sentFiles += batch.length;
      showSent();
      if (answer.warning) {
        showError(`${answer.warning} The page keeps watching the job.`);
        answer = await api(`/api/jobs/${answer.id}`);
      }
      return answer;
    }
    $("upload-rest").hidden = true;
    unsent = 0;
    uploading += 1;
    try {
      if (!u.job) {
        u.job = await sendBatch(u.queue.shift());
        history.replaceState(null, "", `?job=${u.job.id}`);
        remember(u.job);
        render(u.job);
      }
      async function lane() {
        while (u.queue.length && !failed) {
          const answer = await sendBatch(u.queue.shift());
          if (answer.total >= u.job.total) u.job = answer;  // answers may come back out of order
          render(u.job);
        }
      }
      const lanes = await Promise.allSettled(Array.from({ length: PARALLEL_UPLOADS }, lane));
      const broken = lanes.find((l) => l.status === "rejected");
      if (failed || broken) throw failed || broken.reason;
    } catch (e) {
      // Sending again helps after a dropped connection, a server error or too many requests; not after a refusal
      // of the files themselves (a job full, cancelled or over a limit: the message says which).
      if (u.job && u.queue.length && (!e.status || e.status >= 500 || e.status === 429)) offerRest(u);
      throw e;
    } finally {
      uploading -= 1;
    }
    await follow(u.job.id, u.job);
  }

  function offerRest(u) {
    unsent = u.queue.reduce((n, batch) => n + batch.length, 0);
    const button = $("upload-rest");
    button.textContent = `Send the ${count(unsent, "file")} not sent yet`;
    button.title = `Into job ${u.job.id}, which holds the files sent before`;
    button.hidden = false;
    button.onclick = () => {
      $("error").hidden = true;
      run(sendAll(u));
    };
  }

  // Leaving the page (a recent job's link, a reload, closing the tab) while files are still being sent would
  // stop the upload half way, the job holding only part of the folder: the browser asks first.
  let uploading = 0, unsent = 0;  // requests in flight; files a stopped upload left behind ("Send the rest")
  window.addEventListener("beforeunload", (e) => {
    if (uploading || unsent) {
      e.preventDefault();
      e.returnValue = "";
    }
  });

  const FINAL = ["done", "cancelled"];
  let currentJob = null;

  // The jobs this browser made or opened, so that one can be found again without its address. Kept here, not
  // asked of the server: with API tokens off a job's id is what grants access to it, so the server hands out
  // no list of jobs.
  const RECENT_KEY = "pixelproof-recent-jobs";
  const RECENT_MAX = 20;
  const JOB_ID = /^[A-Za-z0-9_-]{1,32}$/;

  function recentJobs() {
    try {
      const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
      return Array.isArray(list) ? list.filter((j) => j && JOB_ID.test(j.id) && typeof j.created_at === "string") : [];
    } catch (_) { return []; }  // written by hand or by something else: start again
  }

  function saveRecent(list) {
    list.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || a.id.localeCompare(b.id));
    localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, RECENT_MAX)));
    showRecent();
  }

  function remember(job) {
    const list = recentJobs();
    const known = list.find((j) => j.id === job.id);
    if (!known) {
      saveRecent([...list, { id: job.id, created_at: job.created_at || new Date().toISOString(), title: job.title || null }]);
    } else if (retitled(known, job)) saveRecent(list);
    const listed = tokenJobs && tokenJobs.find((j) => j.id === job.id);
    if (tokenJobs !== null && !listed) run(loadTokenJobs());
    else if (listed && retitled(listed, job)) showRecent();
  }

  // Whether a recent list's entry had another title than the job now has (renamed, here or elsewhere); it takes it.
  function retitled(entry, job) {
    if ((entry.title || null) === (job.title || null)) return false;
    entry.title = job.title || null;
    return true;
  }

  function forget(id) {
    if (tokenJobs !== null) tokenJobs = tokenJobs.filter((j) => j.id !== id);
    saveRecent(recentJobs().filter((j) => j.id !== id));
  }

  // With API tokens on, the server lists the token's jobs (GET /api/jobs), wherever they were made: that list
  // is shown instead of this browser's own. null: no token, or a server that lists no jobs (tokens off).
  let tokenJobs = null;

  async function loadTokenJobs() {
    let listed = null;
    if (tokenInput.value.trim()) {
      try {
        const search = recentSearch() ? `&title=${encodeURIComponent(recentSearch())}` : "";
        listed = (await api(`/api/jobs?limit=${RECENT_MAX}${search}`)).items;
      } catch (_) { /* tokens off (403), a token it does not know, an older server: this browser's list */ }
    }
    tokenJobs = listed;
    showRecent();
  }

  function jobLine(job) {
    const c = job.counts;
    return `${job.status} · ${count(job.total, "file")} · real ${c.real}` +
      ` · AI-generated ${c.fake} · uncertain ${c.uncertain || 0}` + (job.errors ? ` · ${count(job.errors, "error")}` : "");
  }

  // Part of a title to look for: the server's list asks for it (all of the token's jobs, not only the newest
  // RECENT_MAX), this browser's own list is filtered here, letters in any case either way.
  const recentSearch = () => $("recent-search").value.replace(/\s+/g, " ").trim();

  function showRecent() {
    const search = recentSearch().toLowerCase();
    const own = recentJobs();
    const list = tokenJobs || own.filter((j) => !search || (j.title || "").toLowerCase().includes(search));
    $("recent").hidden = !tokenJobs && !own.length;
    $("recent-count").textContent = String(list.length);
    $("recent-about").textContent = tokenJobs ? "This API token's jobs, newest first, as the server lists them."
      : "The jobs this browser made or opened, newest first, kept in this browser only (a job's address is what opens it).";
    $("recent-forget").hidden = tokenJobs !== null;
    const ul = $("recent-list");
    ul.textContent = "";
    for (const j of list) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `?job=${j.id}`;
      const made = new Date(j.created_at).toLocaleString();
      if (typeof j.title === "string" && j.title) {
        const title = document.createElement("span");
        title.className = "title";
        title.textContent = j.title;
        a.append(title, ` · ${made}`);
      } else {
        a.textContent = made;
      }
      const about = document.createElement("span");
      about.className = "small";
      about.dataset.job = j.id;
      if (j.counts) about.textContent = jobLine(j);  // the server's list carries each job's state
      li.append(a, " ", about);
      ul.appendChild(li);
    }
    if (!list.length && search) {
      const li = document.createElement("li");
      li.className = "small";
      li.textContent = `No job's title contains “${recentSearch()}”.`;
      ul.appendChild(li);
    }
    if ($("recent").open && tokenJobs === null) run(recentStatuses());
  }

  // Each job's state, asked for when the list is opened: the token's list again, or one request a job of this
  // browser's (at most RECENT_MAX).
  async function recentStatuses() {
    if (tokenJobs !== null) return loadTokenJobs();
    await Promise.all(Array.from(document.querySelectorAll("#recent-list span[data-job]"), async (el) => {
      try {
        el.textContent = jobLine(await api(`/api/jobs/${el.dataset.job}`));
      } catch (e) {
        el.textContent = e.status === 404 ? "not on this server now: deleted, expired, or made with another API token"
          : e.message;
      }
    }));
  }

  $("recent").addEventListener("toggle", () => { if ($("recent").open) run(recentStatuses()); });
  $("recent-forget").addEventListener("click", () => {
    localStorage.removeItem(RECENT_KEY);
    showRecent();
  });
  tokenInput.addEventListener("change", () => run(loadTokenJobs()));
  let recentTimer = 0;
  $("recent-search").addEventListener("input", () => {
    clearTimeout(recentTimer);
    recentTimer = setTimeout(() => (tokenJobs !== null ? run(loadTokenJobs()) : showRecent()), 250);
  });

  function render(job) {
    currentJob = job.id;
    showTitle(job);
    if (job.model) showScope(job.model);
    $("job-bar").value = job.total ? job.done / job.total : 0;
    const notes = [job.errors ? count(job.errors, "error") : "",
                   job.cancelled ? `${job.cancelled} cancelled` : ""];
    $("job-text").textContent = `${job.done} / ${job.total}` + (notes.some(Boolean) ? ` (${notes.filter(Boolean).join(", ")})` : "");
    $("job-actions").hidden = false;
    $("cancel-job").hidden = FINAL.includes(job.status);
    shownJob = job;
    showRerun(job);
    $("rerun-of").hidden = !job.rerun_of;
    $("f-changed-label").hidden = !job.rerun_of;  // only a rerun has earlier verdicts to compare with
    if (job.rerun_of) {
      $("rerun-of-link").textContent = job.rerun_of;
      $("rerun-of-link").href = `?job=${job.rerun_of}`;
    }
    const hook = job.callback;
    $("status").textContent = `Job ${job.id}: ${job.status}` + (job.model ? ` · model ${job.model.version}` : "") +
      (hook ? ` · webhook ${hook.status}` + (hook.attempts.length ? ` (${hook.attempts.length} attempt` +
        `${hook.attempts.length === 1 ? "" : "s"}, last: ${hook.attempts[hook.attempts.length - 1].status_code || hook.attempts[hook.attempts.length - 1].error})` : "") : "");
    $("status").dataset.status = job.status;
    $("counts").textContent = `real: ${job.counts.real} · AI-generated: ${job.counts.fake}` +
      ` · uncertain: ${job.counts.uncertain || 0}` +
      (job.declared_ai ? ` · ${job.declared_ai} declare themselves AI-generated (their own metadata)` : "");
    const given = job.reviews ? job.reviews.real + job.reviews.fake + job.reviews.unsure : 0;
    $("reviews").textContent = given ? `Your verdicts: ${given} of ${job.total} (real ${job.reviews.real}` +
      ` · AI-generated ${job.reviews.fake} · unsure ${job.reviews.unsure})` : "";
    $("reviews").hidden = !given;
    showEncodings(job.encodings);
    const t = job.model && job.model.thresholds;
    const share = job.model && job.model.max_false_fake;
    if (t) {
      $("legend").textContent = t.real_below === t.fake_from
        ? `This model labels an image AI-generated when P ≥ ${t.fake_from.toFixed(3)}, real below it.`
        : `This model labels an image AI-generated when P ≥ ${t.fake_from.toFixed(3)} (chosen on calibration data so that ` +
          (share ? `about 1 in ${Math.round(1 / share)}` : "few") +
          ` real photos reached it), real when P < ${t.real_below.toFixed(3)}, and uncertain in between.`;
      $("legend").hidden = false;
    }
  }

  // Called before shownJob becomes `job`: a title that changed since it was last shown goes to the recent lists.
  function showTitle(job) {
    $("job-head").hidden = false;
    $("job-title").textContent = job.title || `Untitled job ${job.id}`;
    $("job-title").classList.toggle("untitled", !job.title);
    document.title = job.title ? `${job.title} · Pixelproof` : PAGE_TITLE;
    if (!shownJob || shownJob.id !== job.id || shownJob.title !== job.title) remember(job);
  }
  const PAGE_TITLE = document.title;

  // A finished job whose results came from another model than the one served now (or from none: cancelled
  // early) can be classified again by it, as a new job of the same stored files.
  function showRerun(job) {
    const button = $("rerun-job");
    const served = servedModel && servedModel.version;
    button.dataset.served = served || "";
    button.hidden = !(served && FINAL.includes(job.status) && (!job.model || job.model.version !== served));
    if (!button.hidden) {
      button.title = `A new job of the same files (nothing is sent again), classified by ${served}; ` +
        "this job keeps its results.";
    }
  }

  const LABEL_TEXT = { fake: "AI-generated", real: "real", uncertain: "uncertain" };

  // Green for crops that look real, red for crops that look generated; the further from 0.5, the stronger.
  function heat(p) {
    const a = Math.min(0.75, Math.abs(p - 0.5) * 1.5).toFixed(2);
    return p >= 0.5 ? `rgba(176, 0, 32, ${a})` : `rgba(27, 127, 59, ${a})`;
  }

  // How the file was encoded (read from its header by the worker, never given to the model).
  function encodingText(e) {
    if (!e || !e.format) return "";
    let text = e.format;
    if (e.quality != null) text += ` quality ${e.quality_exact ? "" : "≈ "}${e.quality}`;
    if (e.chroma) text += `, ${e.chroma}`;
    if (e.progressive) text += ", progressive";
    if (e.lossless != null) text += e.lossless ? ", lossless" : ", lossy";
    return text;
  }

  // The job's classified files by encoding (the server counts them in bands of JPEG quality wide enough that
  // one camera's files stay together): a folder that mixes encodings is one whose verdicts may follow the
  // compression as much as the origin.
  function showEncodings(encodings) {
    const counts = Object.entries(encodings || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const el = $("encodings");
    el.hidden = counts.length === 0;
    if (!counts.length) return;
    const list = counts.map(([g, n]) => `${g} ×${n}`).join(" · ");
    el.textContent = counts.length === 1 ? `Files: ${list}.`
      : `Files: ${list}. This job mixes encodings: a detector's score moves with compression, so compare ` +
        "verdicts within one encoding (each row names its file's).";
    el.classList.toggle("mixed", counts.length > 1);
  }

  function openDetail(jobId, r) {
    $("detail-name").textContent = r.filename;
    const encoding = encodingText(r.encoding);
    $("detail-encoding").textContent = encoding ? `File: ${encoding}. A detector's score moves with compression ` +
      "(the model's limits at the top of the page say how), so compare verdicts between files encoded alike." : "";
    $("detail-encoding").hidden = !encoding;
    const verdict = LABEL_TEXT[r.label] || r.label;
    let why = "";
    if (r.fake_from != null) {
      why = r.label === "fake" ? ` (P ≥ ${r.fake_from.toFixed(3)})`
        : r.label === "real" ? ` (P < ${r.real_below.toFixed(3)})`
        : ` (between ${r.real_below.toFixed(3)} and ${r.fake_from.toFixed(3)})`;
    }
    $("detail-verdict").textContent = `${verdict}: P(AI-generated) = ${r.p_fake.toFixed(3)}${why}` +
      (r.image_width ? ` · ${r.image_width} × ${r.image_height} px` : "") + ` · model ${r.model_version}`;
    const map = $("detail-map");
    map.textContent = "";
    const tbody = $("detail-regions").querySelector("tbody");
    tbody.textContent = "";
    for (const g of r.regions || []) {
      const box = document.createElement("div");
      box.style.left = `${(100 * g.x) / r.image_width}%`;
      box.style.top = `${(100 * g.y) / r.image_height}%`;
      box.style.width = `${(100 * g.w) / r.image_width}%`;
      box.style.height = `${(100 * g.h) / r.image_height}%`;
      box.style.background = heat(g.p_fake);
      box.title = `P(AI-generated) ${g.p_fake.toFixed(3)}`;
      map.appendChild(box);
      const tr = document.createElement("tr");
      for (const text of [`${g.x}, ${g.y}, ${g.w} × ${g.h}`, g.p_fake.toFixed(3)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    $("detail-regions").hidden = !(r.regions || []).length;
    const ev = $("detail-evidence");
    ev.textContent = "";
    for (const e of r.evidence || []) {
      const li = document.createElement("li");
      li.appendChild(badges([e])[0]);
      li.appendChild(document.createTextNode(` ${e.detail} (${e.strength} evidence)`));
      ev.appendChild(li);
    }
    if (r.evidence_note) {
      const li = document.createElement("li");
      li.textContent = `Not read: ${r.evidence_note}`;
      ev.appendChild(li);
    }
    $("detail-evidence-block").hidden = !ev.children.length;
    showReview(jobId, r);
    $("detail-img").removeAttribute("src");
    showImage($("detail-img"), `/api/jobs/${jobId}/images/${r.id}/thumbnail?size=512`);
    if (!$("detail").open) $("detail").showModal();  // "Save and next" opens the next result in the same view
  }

  // Long-poll: the server answers as soon as `done` moves, so a one-image job shows up without delay. Results
  // are shown as they arrive.
  async function follow(jobId, job) {
    if (!job) {  // a saved ?job= link: there is no upload to show
      $("upload-row").hidden = true;
      clearResults();
      try {
        job = await api(`/api/jobs/${jobId}`);
      } catch (e) {
        $("progress").hidden = true;
        throw e;
      }
    }
    $("progress").hidden = false;
    remember(job);
    render(job);
    let done = job.done;
    let failures = 0;
    let shown = -1, refreshed = 0;
    for (;;) {
      // New rows at most every 1.5 s while the job runs (a large job moves in many small steps), and at the end.
      if (job.done !== shown && (FINAL.includes(job.status) || Date.now() - refreshed > 1500)) {
        shown = job.done;
        refreshed = Date.now();
        await refreshResults(jobId);
      }
      if (FINAL.includes(job.status) || stopFollowing === jobId) break;
      try {
        job = await api(`/api/jobs/${jobId}?wait=20&done=${done}`);
        failures = 0;
        $("error").hidden = true;
      } catch (e) {
        if (e.status === 429 && e.retryAfter) {  // the server has too many waiting requests: wait our turn
          await new Promise((r) => setTimeout(r, e.retryAfter * 1000));
          continue;
        }
        if (stopFollowing === jobId) return;  // deleted from this page
        // A restarting server or a dropped connection: say so, back off, keep following the job.
        if (/no job/.test(e.message) || ++failures > 30) throw e;
        showError(`${e.message}; retrying…`);
        await new Promise((r) => setTimeout(r, Math.min(10000, 500 * 2 ** Math.min(failures, 5))));
        continue;
      }
      if (stopFollowing === jobId) return;
      render(job);
      done = job.done;
    }
    if (stopFollowing !== jobId) showDownloads(jobId);
    // A webhook is sent after the job finishes: show how its delivery goes for a while.
    for (let i = 0; i < 60 && job.callback && ["waiting", "pending"].includes(job.callback.status); i++) {
      await new Promise((r) => setTimeout(r, 2000));
      if (stopFollowing === jobId) return;
      job = await api(`/api/jobs/${jobId}`);
      render(job);
    }
  }

  // Rows by image id. Everything before `frontier` is final, so each refresh reads only from the first row
  // still queued or running.
  let rows = new Map();
  let frontier = "0";

  function clearResults() {
    rows = new Map();
    $("encodings").hidden = true;
    frontier = "0";
    $("results").querySelector("tbody").textContent = "";
    $("results").hidden = true;
    $("downloads").hidden = true;
  }

  function fillRow(tr, jobId, r) {
    tr.className = r.status === "error" ? "error" : r.label || "";
    tr.dataset.status = r.status;
    tr.textContent = "";
    const img = document.createElement("img");
    img.alt = "";
    if (r.status === "done") {
      img.dataset.src = `/api/jobs/${jobId}/images/${r.id}/thumbnail`;
      lazy.observe(img);
      // a click, or from the keyboard: the row takes focus (Tab), Enter or Space opens the same view
      const open = () => openDetail(jobId, r);
      tr.onclick = open;
      tr.tabIndex = 0;
      tr.onkeydown = (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
      };
    }
    tr.dataset.id = r.id;
    const label = r.status === "error" ? "error" : r.status === "done" ? (LABEL_TEXT[r.label] || r.label) : r.status;
    const labelCell = document.createElement("span");
    labelCell.textContent = label;
    for (const b of badges(r.evidence)) labelCell.appendChild(b);
    if (r.review) {
      const b = document.createElement("span");
      b.className = "badge review";
      b.textContent = `reviewed: ${LABEL_TEXT[r.review] || r.review}`;
      b.title = r.review_note || "a person's verdict";
      labelCell.appendChild(b);
    }
    // In a rerun, a verdict the new model changed says what the earlier job's was.
    const before = r.earlier;
    if (r.status === "done" && before && before.status === "done" && before.label !== r.label) {
      const b = document.createElement("span");
      b.className = "badge earlier";
      b.textContent = `was: ${LABEL_TEXT[before.label] || before.label}`;
      b.title = `P ${before.p_fake.toFixed(3)} by ${before.model_version}, in the earlier job`;
      labelCell.appendChild(b);
    }
    // A done row's note is its file's encoding, so that a folder's mix of formats shows at a glance.
    const note = r.error || encodingText(r.encoding);
    const cells = [img, r.filename, labelCell, r.p_fake == null ? "" : r.p_fake.toFixed(3), note];
    cells.forEach((c, k) => {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c;
      if (k === 2) td.className = "label";
      if (k === 4 && !r.error) td.className = "small encoding";
      tr.appendChild(td);
    });
  }

  const KIND_TEXT = { content_credentials: "Content Credentials", xmp: "XMP/IPTC", exif: "EXIF",
                      generation_parameters: "generator parameters" };
  const SAYS_TEXT = { ai: "says AI", camera: "says camera", edited: "records edits" };

  // What the file says about itself, beside the model's verdict (never mixed into it): one badge per claim.
  function badges(evidence) {
    const seen = new Set();
    const out = [];
    for (const e of evidence || []) {
      const text = `${KIND_TEXT[e.kind] || e.kind}: ${SAYS_TEXT[e.says] || e.says}`;
      if (seen.has(text)) continue;
      seen.add(text);
      const b = document.createElement("span");
      b.className = `badge ${e.says} ${e.strength}`;
      b.textContent = text + (e.strength === "strong" ? " ✓" : "");
      b.title = `${e.detail} (${e.strength} evidence)`;
      out.push(b);
    }
    return out;
  }

  // The filter bar: label, status, P range, part of the name and order, as the API's query parameters.
  function filterParams() {
    const q = new URLSearchParams();
    if ($("f-label").value) q.set("label", $("f-label").value);
    if ($("f-status").value) q.set("status", $("f-status").value);
    if ($("f-review").value) q.set("review", $("f-review").value);
    if ($("f-name").value) q.set("name", $("f-name").value);
    if ($("f-changed").checked && !$("f-changed-label").hidden) q.set("changed", "1");
    for (const [id, name] of [["f-pmin", "p_min"], ["f-pmax", "p_max"]]) {
      const v = $(id).value.trim();
      if (v !== "" && Number(v) >= 0 && Number(v) <= 1) q.set(name, v);
    }
    if ($("f-sort").value !== "id") q.set("sort", $("f-sort").value);
    return q;
  }

  let refreshing = Promise.resolve();

  // One refresh at a time: a filter change while the job is followed waits for the refresh in flight.
  function refreshResults(jobId) {
    refreshing = refreshing.catch(() => {}).then(() => loadResults(jobId));
    return refreshing;
  }

  async function loadResults(jobId) {
    const tbody = $("results").querySelector("tbody");
    const params = filterParams();
    const filtered = params.toString() !== "";
    if (filtered) {  // a filtered or re-ordered list is read whole each time, in the server's order
      rows = new Map();
      frontier = "0";
      tbody.textContent = "";
    }
    let cursor = frontier;
    let settled = !filtered;  // every row so far is final: the frontier may move past it
    let shownCount = 0;
    while (cursor !== null) {
      params.set("limit", "1000");
      params.set("cursor", cursor);
      const page = await api(`/api/jobs/${jobId}/results?${params}`);
      shownCount += page.items.length;
      const frag = document.createDocumentFragment();
      for (const r of page.items) {
        let tr = rows.get(r.id);
        const final = r.status === "done" || r.status === "error";
        if (!tr) {
          tr = document.createElement("tr");
          rows.set(r.id, tr);
          frag.appendChild(tr);
          fillRow(tr, jobId, r);
        } else if (tr.dataset.status !== r.status) fillRow(tr, jobId, r);
        if (settled && final) frontier = String(r.id);
        else settled = false;
      }
      tbody.appendChild(frag);
      cursor = page.next_cursor;
    }
    $("filters").hidden = false;
    $("f-count").textContent = filtered ? `${shownCount} shown` : "";
    $("results").hidden = rows.size === 0;
  }

  // A titled job's results save under its title (characters no file system takes become "_"), others by id.
  function downloadName(jobId) {
    const shown = jobId === currentJob && shownJob ? shownJob.title || "" : "";
    const title = shown.replace(/[\\/:*?"<>|]/g, "_").replace(/^[.\s]+|[.\s]+$/g, "");
    return title || `pixelproof-${jobId}`;
  }

  function showDownloads(jobId) {
    for (const fmt of ["csv", "json"]) {
      $(`dl-${fmt}`).onclick = (e) => {
        e.preventDefault();
        const params = filterParams();
        params.set("format", fmt);
        params.set("download", "1");
        run(download(`/api/jobs/${jobId}/results?${params}`, `${downloadName(jobId)}.${fmt}`));
      };
    }
    $("downloads").hidden = false;
  }

  let filterTimer = 0;
  $("filters").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => { if (currentJob) run(refreshResults(currentJob)); }, 250);
  });
  $("filters").addEventListener("submit", (e) => e.preventDefault());

  let stopFollowing = null;

  $("cancel-job").addEventListener("click", () => run((async () => {
    const job = await api(`/api/jobs/${currentJob}/cancel`, "POST");
    render(job);
    await refreshResults(job.id);
  })()));

  $("rerun-job").addEventListener("click", () => run((async () => {
    $("rerun-job").disabled = true;  // one click, one new job
    let job;
    try {
      job = await api(`/api/jobs/${currentJob}/rerun`, "POST");
    } finally {
      $("rerun-job").disabled = false;
    }
    history.replaceState(null, "", `?job=${job.id}`);
    $("upload-row").hidden = true;
    clearResults();
    await follow(job.id, job);
  })()));

  $("rename-job").addEventListener("click", () => {
    $("title-input").value = (shownJob && shownJob.title) || "";
    $("title-form").hidden = false;
    $("rename-job").hidden = true;
    $("title-input").focus();
  });
  function closeTitleForm() {
    $("title-form").hidden = true;
    $("rename-job").hidden = false;
  }
  $("title-cancel").addEventListener("click", closeTitleForm);
  $("title-form").addEventListener("keydown", (e) => { if (e.key === "Escape") closeTitleForm(); });
  $("title-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run((async () => {
      $("title-save").disabled = true;
      try {
        render(await api(`/api/jobs/${currentJob}`, "PATCH", { title: $("title-input").value }));
        closeTitleForm();
      } finally {
        $("title-save").disabled = false;
      }
    })());
  });

  $("delete-job").addEventListener("click", () => run((async () => {
    const id = currentJob;
    if (!confirm(`Delete job ${id} with its results and uploads? This cannot be undone.`)) return;
    stopFollowing = id;
    const gone = await api(`/api/jobs/${id}`, "DELETE");
    forget(id);
    clearResults();
    $("progress").hidden = true;
    $("filters").hidden = true;
    history.replaceState(null, "", location.pathname);
    document.title = PAGE_TITLE;
    unsent = 0;  // a deleted job takes nothing more
    $("status").textContent = "";
    const el = $("error");
    el.textContent = `Job ${gone.deleted} was deleted: ${gone.images} results, ${gone.files_removed} stored files removed.`;
    el.hidden = false;
    currentJob = null;
  })()));

  // The per-image view's review form: a person's verdict, saved on the server and shown on the row.
  let reviewing = null;

  function showReview(jobId, r) {
    reviewing = { jobId, id: r.id };
    for (const input of document.querySelectorAll("#review input[name=verdict]")) input.checked = input.value === r.review;
    $("review-note").value = r.review_note || "";
    $("review-status").textContent = r.review ? "saved" : "";
  }

  // The next classified result in the list as shown (filtered and sorted), for going through a desk's queue.
  function nextResult(id) {
    let tr = rows.get(id);
    do tr = tr && tr.nextElementSibling; while (tr && tr.tabIndex < 0);
    return tr;
  }

  $("review").addEventListener("submit", (e) => {
    e.preventDefault();
    const andNext = e.submitter && e.submitter.id === "review-next";
    const chosen = document.querySelector("#review input[name=verdict]:checked");
    if (!chosen || !reviewing) {
      $("review-status").textContent = "choose real, AI-generated or unsure first";
      return;
    }
    const { jobId, id } = reviewing;
    run((async () => {
      const item = await api(`/api/jobs/${jobId}/images/${id}/review`, "POST",
                             { verdict: chosen.value, note: $("review-note").value });
      $("review-status").textContent = "saved";
      const tr = rows.get(item.id);
      if (tr) fillRow(tr, jobId, item);
      reviewSaved = true;
      run((async () => { const job = await api(`/api/jobs/${jobId}`); if (currentJob === job.id) render(job); })());
      if (!andNext) return;
      const next = nextResult(item.id);
      if (next) {
        next.click();
        next.scrollIntoView({ block: "nearest" });
      } else $("review-status").textContent = "saved; that was the last result in the list";
    })());
  });

  // Listed by verdict ("not given yet": a desk's queue), a result just reviewed may no longer belong: the list
  // is read again once its view is closed, not under it.
  let reviewSaved = false;
  $("detail").addEventListener("close", () => {
    if (reviewSaved && $("f-review").value && currentJob) run(refreshResults(currentJob));
    reviewSaved = false;
  });

  // Hidden files inside a folder (.DS_Store, a Mac's ._ companions of each photo, .git) are nobody's images:
  // left out, as `pixelproof submit` leaves them out (shared/folders.py). A file picked on its own is sent.
  const hidden = (path) => path.split("/").slice(1).some((part) => part.startsWith("."));

  function fromInput(input) {
    return Array.from(input.files).map((file) => ({ file, path: file.webkitRelativePath || file.name }))
      .filter((e) => !hidden(e.path));
  }

  // Folders dropped on the page arrive as entries; walk them so nested paths keep their folder names. Where
  // the browser gives no entries (files from an application that hands over plain files), the files are taken.
  async function fromDrop(transfer) {
    // read before the first await: a drop's data is gone once its event has been handled
    const entries = Array.from(transfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry())
      .filter(Boolean);
    if (!entries.length) return Array.from(transfer.files || []).map((file) => ({ file, path: file.name }));
    const out = [];
    async function walk(entry, prefix) {
      if (entry.isFile) {
        const file = await new Promise((res, rej) => entry.file(res, rej));
        out.push({ file, path: prefix + file.name });
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (!batch.length) break;
          for (const child of batch) if (!child.name.startsWith(".")) await walk(child, prefix + entry.name + "/");
        }
      }
    }
    for (const e of entries) await walk(e, "");
    return out;
  }

  const run = (p) => p.catch((e) => showError(e.message));
  $("folder-input").addEventListener("change", (e) => run(upload(fromInput(e.target))));
  $("files-input").addEventListener("change", (e) => run(upload(fromInput(e.target))));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    run(fromDrop(e.dataTransfer).then(upload));
  });

  // Only a job id (url-safe base64) is taken from the address bar, so ?job= can never point the page's
  // authorised requests at another API path.
  const configLoaded = loadConfig();
  showRecent();
  run(loadTokenJobs());
  const existing = new URLSearchParams(location.search).get("job");
  if (existing && JOB_ID.test(existing)) run(follow(existing, null));
  else if (existing) showError("the address names no valid job id");
})();
