//! The console's page frame and small HTML helpers: escaping, status badges, durations,
//! artifact previews. The stylesheet is served by the console itself (`/console/style.css`:
//! nothing from the network, and no inline style the Content-Security-Policy would have to
//! allow).

use renderfleet_shared::artifact::ArtifactRef;

pub(super) const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f6f7}
nav{background:#1d2733;padding:8px 16px}nav a{color:#dfe6ee;margin-right:18px;text-decoration:none;font-weight:600}
main{padding:16px 20px}table{border-collapse:collapse;background:#fff;margin:8px 0}td,th{border:1px solid #e2e2e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f1f4}.card{background:#fff;border:1px solid #e2e2e6;border-radius:6px;padding:8px 14px;margin:8px 0}
.badge{border-radius:10px;padding:1px 8px;color:#fff;font-size:12px;font-weight:600}
.s-succeeded,.s-match,.s-pass,.s-delivered{background:#2e7d32}.s-failed,.s-mismatch,.s-fail,.s-candidate_error,.s-control_error,.s-silent{background:#c62828}
.s-running,.s-idle,.s-busy{background:#1565c0}.s-queued,.s-comparing{background:#6a1b9a}.s-pending,.s-insufficient_data,.s-ignored,.s-draining{background:#8d8d8d}
.s-skipped,.s-cancelled,.s-stopped{background:#b0b0b0}.s-cached{background:#00796b}.error{color:#b71c1c}.warning{color:#8a5a00}.muted{color:#6b6b70}
pre.log{background:#111;color:#ddd;padding:8px;max-height:260px;overflow:auto;font-size:12px}
details.node{background:#fff;border:1px solid #e2e2e6;border-radius:6px;margin:6px 0;padding:6px 10px}
.artifacts figure,.side figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}
.artifacts img{max-width:160px;max-height:160px;border:1px solid #ddd;background:#fff}.side img{max-width:420px;border:1px solid #ddd}
.filters{margin:4px 0 8px}form.inline{display:inline}code{font-size:12px}
nav form{float:right;margin:0}nav button{background:none;border:0;padding:0;color:#dfe6ee;font:inherit;font-weight:600;cursor:pointer}
#dag{background:#fff;border:1px solid #e2e2e6;border-radius:6px;max-width:100%}";

/// HTML-escapes text.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub(super) fn url(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The hidden field that carries the session's CSRF token in every state-changing form.
pub(super) fn csrf_field(token: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(token))
}

/// A page; `csrf` (signed in) adds the sign-out button, `refresh` reloads it every two seconds
/// (a run still running).
pub(super) fn page(title: &str, body: &str, csrf: Option<&str>, refresh: bool) -> String {
    let meta = if refresh { "<meta http-equiv=\"refresh\" content=\"2\">" } else { "" };
    let sign_out = csrf
        .map(|t| {
            format!("<form method=\"post\" action=\"/console/logout\">{}<button id=\"sign-out\">Sign out</button></form>", csrf_field(t))
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{meta}<title>{t} · renderfleet</title><link rel=\"stylesheet\" href=\"/console/style.css\"></head><body>\
         <nav><a href=\"/console/runs\">Runs</a><a href=\"/console/comparisons\">Comparisons</a><a href=\"/console/rollout\">Rollout</a><a href=\"/console/workers\">Workers</a><a href=\"/console/webhooks\">Webhooks</a><a href=\"/console/workflows\">Workflows</a>{sign_out}</nav>\
         <main><h2>{t}</h2>{body}</main></body></html>",
        t = esc(title)
    )
}

pub(super) fn status_badge(status: &str) -> String {
    let s = esc(status);
    format!("<span class=\"badge s-{s}\">{s}</span>")
}

/// Milliseconds for people.
pub(super) fn duration(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{:.1} min", ms as f64 / 60_000.0),
    }
}

/// An output artifact: a thumbnail for images, a download link and its size for the rest.
pub(super) fn artifact(port: &str, r: &ArtifactRef) -> String {
    let href = format!("/console/artifacts/{}", r.sha256);
    let size =
        if r.bytes >= 1 << 20 { format!("{:.1} MB", r.bytes as f64 / 1048576.0) } else { format!("{:.1} kB", r.bytes as f64 / 1024.0) };
    let mut facts = vec![r.kind.clone(), size];
    for key in ["width", "height", "frames", "part_count", "instance_count", "mesh_objects"] {
        if let Some(v) = r.meta.get(key).filter(|v| !v.is_null()) {
            facts.push(format!("{key} {v}"));
        }
    }
    let preview = if r.kind == "image_png" { format!("<img src=\"{href}\" alt=\"{}\"><br>", esc(port)) } else { String::new() };
    format!(
        "<figure>{preview}<a href=\"{href}\" download=\"{}-{}\">{}</a><figcaption class=\"muted\">{}</figcaption></figure>",
        esc(port),
        &r.sha256[..12],
        esc(port),
        esc(&facts.join(" · "))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_encoding() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(url("2026-11-25T22:00:00+00:00"), "2026-11-25T22%3A00%3A00%2B00%3A00");
        assert_eq!(duration(1500), "1.5 s");
    }
}
