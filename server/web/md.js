// A small Markdown renderer for answers: paragraphs, headings, lists,
// block quotes, fenced and indented code, inline code, emphasis, links.
// It builds DOM nodes (never HTML strings), so nothing a model writes can
// run as markup; links open only http(s) and mailto addresses.

export function render(text) {
  const root = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence (or the end: an answer still streaming)
      root.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    if (/^\s*$/.test(line)) { i++; continue; }
    const h = line.match(/^(#{1,6})\s+(.*)$/);
    if (h) {
      const el = document.createElement("h" + Math.min(6, h[1].length + 2));
      inline(el, h[2]);
      root.append(el);
      i++;
      continue;
    }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = document.createElement(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
        const li = document.createElement("li");
        let item = lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, "");
        i++;
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) item += " " + lines[i++].trim();
        inline(li, item);
        list.append(li);
      }
      root.append(list);
      continue;
    }
    if (/^>\s?/.test(line)) {
      const quote = document.createElement("blockquote");
      const body = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) body.push(lines[i++].replace(/^>\s?/, ""));
      quote.append(render(body.join("\n")));
      root.append(quote);
      continue;
    }
    if (/^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || lines[i].trim() === "")) body.push(lines[i++].replace(/^( {4}|\t)/, ""));
      root.append(codeBlock(body.join("\n").replace(/\n+$/, ""), ""));
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() !== "" && !/^(\s*(```|~~~)|#{1,6}\s|\s*([-*+]|\d+[.)])\s+|>)/.test(lines[i])) para.push(lines[i++]);
    if (para.length === 0) para.push(lines[i++]);
    const p = document.createElement("p");
    inline(p, para.join("\n"));
    root.append(p);
  }
  return root;
}

function codeBlock(body, lang) {
  const pre = document.createElement("pre");
  const code = document.createElement("code");
  if (lang) code.dataset.lang = lang;
  code.textContent = body;
  pre.append(code);
  return pre;
}

// inline appends text's inline Markdown to el.
function inline(el, text) {
  const re = /(`+)([\s\S]*?)\1|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])|\n/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) el.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1]) {
      const c = document.createElement("code");
      c.textContent = m[2];
      el.append(c);
    } else if (m[3] || m[4]) {
      const b = document.createElement("strong");
      inline(b, m[3] || m[4]);
      el.append(b);
    } else if (m[5] || m[6]) {
      const e = document.createElement("em");
      inline(e, m[5] || m[6]);
      el.append(e);
    } else if (m[7]) {
      el.append(link(m[8], m[7]));
    } else if (m[9]) {
      el.append(link(m[9], m[9]));
    } else {
      el.append(document.createElement("br"));
    }
  }
  if (last < text.length) el.append(text.slice(last));
}

function link(href, label) {
  if (!/^(https?:|mailto:)/i.test(href)) return document.createTextNode(label);
  const a = document.createElement("a");
  a.href = href;
  a.textContent = label;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  return a;
}
