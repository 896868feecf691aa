//! The user's guide is a book (`book.toml`, `docs/SUMMARY.md`): this test builds it with
//! mdBook and fails on any warning or error of the build, on a page of `docs/` that is not in
//! the book, and on any link of the built HTML that leads nowhere: a relative `href` or `src`
//! to a file that does not exist, or a `#fragment` (on another page or the same one) that names
//! no element of its page. The README's relative links are checked too.
//!
//! mdBook is found through `PORTICO_MDBOOK`, else `mdbook` in `PATH`, else
//! `$HOME/.cache/portico/tools/bin/mdbook` (where `scripts/test` installs it); without it the
//! test fails and says to run `scripts/test`.
//!
//! The generated reference pages are checked by their own tests (`reference_docs` of the
//! `portico` and `portico-gateways` crates).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The mdBook program, or why there is none.
fn mdbook() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PORTICO_MDBOOK").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "PORTICO_MDBOOK={} is not a file; run scripts/test, which installs mdbook",
                path.display()
            ))
        };
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("mdbook"));
    let tools = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/portico/tools/bin/mdbook"));
    in_path.chain(tools).find(|p| p.is_file()).ok_or_else(|| {
        "mdbook is not installed: run scripts/test, which installs it under \
         $HOME/.cache/portico/tools (or set PORTICO_MDBOOK to an mdbook program)"
            .to_string()
    })
}

#[test]
fn the_book_builds_without_a_warning_and_every_link_in_it_leads_somewhere() {
    let mdbook = mdbook().unwrap_or_else(|e| panic!("{e}"));
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(&mdbook)
        .arg("build")
        .arg("-d")
        .arg(out.path())
        .arg(repo())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", mdbook.display()));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "mdbook build failed:\n{log}");
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        complaints.is_empty(),
        "mdbook build warned:\n{}",
        complaints.join("\n")
    );
    assert!(
        out.path().join("index.html").is_file(),
        "no index.html in the book:\n{log}"
    );
    let broken = broken_html_links(out.path());
    assert!(
        broken.is_empty(),
        "links of the book that lead nowhere (page: link: why):\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_page_of_docs_is_in_the_book() {
    let docs = repo().join("docs");
    let summary = std::fs::read_to_string(docs.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<PathBuf> = markdown_links(&summary)
        .into_iter()
        .map(|l| docs.join(l.split('#').next().unwrap_or_default()))
        .collect();
    let mut pages = Vec::new();
    files(&docs, &mut pages);
    let missing: Vec<String> = pages
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| p.file_name().is_some_and(|n| n != "SUMMARY.md"))
        .filter(|p| !listed.contains(*p))
        .map(|p| p.strip_prefix(repo()).unwrap_or(p).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "pages of docs/ that docs/SUMMARY.md does not list (the book would leave them out): {missing:?}"
    );
}

#[test]
fn the_readme_links_lead_somewhere() {
    let root = repo();
    let broken = broken_markdown_links(&root.join("README.md"), &root);
    assert!(
        broken.is_empty(),
        "links of README.md that lead nowhere:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(
        root.join("index.html"),
        r##"<html><body>
        <h1 id="top">Top</h1>
        <a href="sub/page.html#there">fine</a>
        <a href="sub/page.html#nowhere">a missing anchor</a>
        <a href="missing.html">a missing page</a>
        <a href="#top">fine, same page</a>
        <a href="#gone">a missing anchor on the same page</a>
        <a href='sub/'>fine: a directory with its index</a>
        <img src="images/missing.png">
        <a href="https://example.invalid/x">external</a>
        <a href="mailto:someone@example.invalid">mail</a>
        <a href="#">the top</a>
        </body></html>"##,
    )
    .unwrap();
    std::fs::write(
        root.join("sub/page.html"),
        r#"<p id="there">here</p><a href="../index.html?x=1#top">fine</a><a href="../index.html#Top">wrong case</a>"#,
    )
    .unwrap();
    std::fs::write(root.join("sub/index.html"), "<p>index</p>").unwrap();
    std::fs::write(
        root.join("404.html"),
        r#"<base href="/"><a href="index.html">fine from the root</a><a href="sub/nope.html">missing</a>"#,
    )
    .unwrap();
    let broken = broken_html_links(root);
    assert_eq!(
        broken,
        vec![
            "404.html: sub/nope.html: no such file",
            "index.html: #gone: no element with id `gone` in index.html",
            "index.html: images/missing.png: no such file",
            "index.html: missing.html: no such file",
            "index.html: sub/page.html#nowhere: no element with id `nowhere` in sub/page.html",
            "sub/page.html: ../index.html#Top: no element with id `Top` in index.html",
        ],
        "{broken:#?}"
    );

    std::fs::write(
        root.join("README.md"),
        "# Title\n\nSee [the page](docs/a.md#a-heading), [missing](docs/b.md), \
         [bad anchor](docs/a.md#nope), [site](https://example.invalid), [here](#title) \
         and `[not a link](nowhere.md)`.\n\n```sh\n[also not](nowhere.md)\n```\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/a.md"), "# Page\n\n## A heading\n").unwrap();
    let broken = broken_markdown_links(&root.join("README.md"), root);
    assert_eq!(
        broken,
        vec![
            "docs/b.md: no such file",
            "docs/a.md#nope: no heading `nope` in docs/a.md",
        ],
        "{broken:#?}"
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// True for a link that leaves the book (another scheme, or another host).
fn external(link: &str) -> bool {
    let scheme = link.split_once(':').map(|(s, _)| s).filter(|s| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    scheme.is_some() || link.starts_with("//")
}

/// `%20` and the like decoded.
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `base` joined with the relative path `rel`, `..` and `.` resolved without touching the
/// file system; `None` when it climbs above the file system's root.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The values of every `name="…"` (or `name='…'`) attribute in `html`.
fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for quote in ['"', '\''] {
        let pattern = format!("{name}={quote}");
        let mut rest = html;
        while let Some(at) = rest.find(&pattern) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + pattern.len()..];
            // `data-href=` is not `href=`.
            if !before.is_some_and(char::is_whitespace) {
                continue;
            }
            let Some(end) = rest.find(quote) else { break };
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// Every broken link of the HTML files under `root`, as `page: link: why`, sorted.
fn broken_html_links(root: &Path) -> Vec<String> {
    let mut pages = Vec::new();
    files(root, &mut pages);
    pages.retain(|p| p.extension().is_some_and(|e| e == "html"));
    let mut ids: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap_or_default();
        let mut found: BTreeSet<String> = attribute_values(&text, "id")
            .into_iter()
            .map(percent_decoded)
            .collect();
        // `<a name="…">` anchors count too.
        found.extend(
            attribute_values(&text, "name")
                .into_iter()
                .map(percent_decoded),
        );
        ids.insert(page.clone(), found);
        texts.insert(page.clone(), text);
    }
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut broken = Vec::new();
    for (page, text) in &texts {
        // `<base href="/…">` (mdBook's 404 page): links are relative to the book's root.
        let base = match text
            .find("<base ")
            .and_then(|at| attribute_values(&text[at..], "href").first().copied())
        {
            Some(b) if b.starts_with('/') => root.join(b.trim_start_matches('/')),
            _ => page.parent().unwrap_or(root).to_path_buf(),
        };
        let mut links: Vec<&str> = attribute_values(text, "href");
        links.extend(attribute_values(text, "src"));
        for link in links {
            let link = link.trim().replace("&amp;", "&");
            let link = link.as_str();
            if link.is_empty() || external(link) || link == "#" {
                continue;
            }
            let (target, fragment) = match link.split_once('#') {
                Some((t, f)) => (t, Some(f)),
                None => (link, None),
            };
            let target = target.split('?').next().unwrap_or_default();
            let file = if target.is_empty() {
                Some(page.clone())
            } else if let Some(abs) = target.strip_prefix('/') {
                resolve(root, &percent_decoded(abs))
            } else {
                resolve(&base, &percent_decoded(target))
            };
            let file = file.map(|f| if f.is_dir() { f.join("index.html") } else { f });
            let Some(file) = file.filter(|f| f.is_file()) else {
                broken.push(format!("{}: {link}: no such file", shown(page)));
                continue;
            };
            let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
                continue;
            };
            let fragment = percent_decoded(fragment);
            let known = ids.get(&file);
            if known.is_some_and(|ids| !ids.contains(&fragment)) {
                broken.push(format!(
                    "{}: {link}: no element with id `{fragment}` in {}",
                    shown(page),
                    shown(&file)
                ));
            }
        }
    }
    broken.sort();
    broken.dedup();
    broken
}

/// The targets of the inline links (`[text](target)`) of Markdown `text`, code aside.
fn markdown_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code spans are not links.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            out.push(target.to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as `-`.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the headings of Markdown `text`.
fn heading_anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced && line.starts_with('#') {
            out.insert(heading_anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every broken relative link of the Markdown file `file` (its targets taken from `dir`, its
/// directory), as `link: why`.
fn broken_markdown_links(file: &Path, dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let shown = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut broken = Vec::new();
    for link in markdown_links(&text) {
        if link.is_empty() || external(&link) {
            continue;
        }
        let (target, fragment) = match link.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (link.as_str(), None),
        };
        let path = if target.is_empty() {
            Some(file.to_path_buf())
        } else {
            resolve(dir, &percent_decoded(target))
        };
        let Some(path) = path.filter(|p| p.exists()) else {
            broken.push(format!("{link}: no such file"));
            continue;
        };
        if let Some(fragment) = fragment.filter(|f| !f.is_empty())
            && path.extension().is_some_and(|e| e == "md")
        {
            let anchors = heading_anchors(&std::fs::read_to_string(&path).unwrap_or_default());
            if !anchors.contains(&percent_decoded(fragment)) {
                broken.push(format!(
                    "{link}: no heading `{fragment}` in {}",
                    shown(&path)
                ));
            }
        }
    }
    broken
}
