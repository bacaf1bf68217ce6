"""The report's stylesheet and the images page's script: written beside the pages,
never fetched from anywhere (no CDN, no web font)."""

STYLE = """\
:root { color-scheme: light dark; --line: #8884; --accent: #2a6fdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.2em;
  border-bottom: 1px solid var(--line); position: sticky; top: 0; background: Canvas; z-index: 1; }
header nav a { margin-right: 1em; text-decoration: none; }
a.active { font-weight: bold; text-decoration: underline; }
.brand { font-weight: 600; }
main { padding: 0 1.2em 2em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border-bottom: 1px solid var(--line); padding: .25em .6em; text-align: left;
  vertical-align: top; }
code { font-size: 12px; word-break: break-all; }
.path { font-family: ui-monospace, monospace; font-size: 12px; }
.pager a { margin: 0 .2em; }
.faces, .images { display: flex; flex-wrap: wrap; gap: 12px; }
figure.face { margin: 0; width: 330px; border: 1px solid var(--line); border-radius: 6px;
  padding: 8px; }
figure.face:target { outline: 3px solid var(--accent); }
.pair { display: flex; gap: 6px; margin-bottom: 6px; }
img.chip, .missing.chip { width: 96px; height: 96px; object-fit: cover; border-radius: 4px; }
.missing { display: inline-flex; align-items: center; justify-content: center;
  background: #8883; color: #888; width: 96px; height: 96px; }
.source { position: relative; display: inline-block; line-height: 0; }
img.thumb { max-width: 310px; max-height: 200px; }
.source .box { position: absolute; border: 2px solid #ff2d55; }
figcaption { margin-top: 4px; }
figcaption code { display: block; margin-top: 2px; }
details code { background: #8882; padding: 2px 4px; margin-top: 4px; }
section.person { display: flex; gap: 12px; padding: 10px 0; border-bottom: 1px solid var(--line); }
section.person h2, section.cluster h2 { margin: 0 0 .2em; font-size: 16px; }
.chips { display: flex; flex-wrap: wrap; gap: 4px; }
.chips img.chip, .chips .missing { width: 64px; height: 64px; }
section.cluster { padding: 10px 0; border-bottom: 1px solid var(--line); }
.more { align-self: center; padding: 0 .5em; color: #888; }
.filters { display: flex; flex-wrap: wrap; gap: 1em; margin: .5em 0 1em; }
.image { width: 220px; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
figure.image { margin: 0; }
.image img, .image .missing { width: 206px; height: 150px; object-fit: contain; }
.image p { margin: .2em 0; font-size: 12px; overflow-wrap: anywhere; }
"""

IMAGES_SCRIPT = """\
// Filters the images of window.IMAGINEM_IMAGES (data/images.js) in the page.
(function () {
  "use strict";
  var images = window.IMAGINEM_IMAGES || [];
  var STEP = 120;
  var shown = STEP;
  var field = function (id) { return document.getElementById(id); };
  var folded = function (text) { return (text || "").toLowerCase(); };

  function matches(image) {
    var set = field("set").value, tag = field("tag").value;
    var label = folded(field("label").value).trim(), text = folded(field("text").value).trim();
    if (set && image.s !== set) return false;
    if (tag && image.t.indexOf(tag) < 0) return false;
    if (label && !image.l.some(function (l) { return folded(l).indexOf(label) >= 0; })) {
      return false;
    }
    if (text && folded(image.o).indexOf(text) < 0) return false;
    if (field("faces").checked && !image.f) return false;
    return true;
  }

  function card(image) {
    var box = document.createElement("div");
    box.className = "image";
    var picture;
    if (image.m) {
      picture = document.createElement("img");
      picture.src = image.m;
      picture.alt = image.p;
      picture.loading = "lazy";
    } else {
      picture = document.createElement("span");
      picture.className = "missing";
      picture.textContent = "?";
    }
    box.appendChild(picture);
    var lines = [image.p, image.l.slice(0, 3).join(", "), image.f ? image.f + " face(s)" : "",
                 image.o ? "\\u201c" + image.o.slice(0, 120) + "\\u201d" : ""];
    lines.forEach(function (line, i) {
      if (!line) return;
      var p = document.createElement("p");
      p.textContent = line;
      if (i === 0) p.className = "path";
      box.appendChild(p);
    });
    return box;
  }

  function render() {
    var found = images.filter(matches);
    var results = field("results");
    results.textContent = "";
    found.slice(0, shown).forEach(function (image) { results.appendChild(card(image)); });
    field("count").textContent = found.length + " of " + images.length + " images";
    field("more").hidden = found.length <= shown;
  }

  field("filters").addEventListener("input", function () { shown = STEP; render(); });
  field("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  field("more").addEventListener("click", function () { shown += STEP; render(); });
  render();
})();
"""
