// A small, safe Markdown renderer: all text is HTML-escaped first, then a few constructs
// (fenced code, inline code, headers, lists, bold, italics, paragraphs) become markup.
// No raw HTML from a prompt or an answer ever reaches the page, so no script can run.
(function (global) {
  "use strict";
  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  const KEYWORDS = /\b(def|class|return|if|else|elif|for|while|import|from|function|const|let|var|async|await|try|except|catch|finally|with|as|in|not|and|or|None|True|False|null|true|false|new|public|private|static|void|int|fn|pub|struct|impl|match)\b/g;
  // One pass over the escaped code: each string, comment or keyword is wrapped once, and nothing
  // is matched again inside markup already added (a keyword such as "class" in a span's attribute).
  const TOKENS = new RegExp("(&quot;.*?&quot;|&#39;.*?&#39;)|((?:^|\\n)[ \\t]*(?:#|\\/\\/)[^\\n]*)|" + KEYWORDS.source, "g");
  function highlight(escapedCode) {
    return escapedCode.replace(TOKENS, function (match, str, comment, keyword) {
      if (str) return '<span class="tok-str">' + str + "</span>";
      if (comment) {
        const lead = comment.match(/^\n?[ \t]*/)[0];
        return lead + '<span class="tok-com">' + comment.slice(lead.length) + "</span>";
      }
      return '<span class="tok-kw">' + keyword + "</span>";
    });
  }
  function inline(text) {
    return text
      .replace(/`([^`]+)`/g, "<code>$1</code>")
      .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>");
  }
  function render(source) {
    const parts = source.split(/```/);
    let html = "";
    parts.forEach(function (part, index) {
      if (index % 2 === 1) {
        const newline = part.indexOf("\n");
        const lang = newline >= 0 ? part.slice(0, newline).trim() : "";
        const code = newline >= 0 ? part.slice(newline + 1) : part;
        html += '<pre class="code"><code data-lang="' + escapeHtml(lang) + '">' + highlight(escapeHtml(code)) + "</code></pre>";
        return;
      }
      const lines = escapeHtml(part).split("\n");
      let list = null;
      let paragraph = [];
      function flushParagraph() {
        if (paragraph.length) { html += "<p>" + inline(paragraph.join("<br>")) + "</p>"; paragraph = []; }
      }
      function closeList() { if (list) { html += "</" + list + ">"; list = null; } }
      lines.forEach(function (line) {
        let m;
        if ((m = line.match(/^(#{1,6})\s+(.*)$/))) {
          flushParagraph(); closeList();
          const level = Math.min(m[1].length + 2, 6);
          html += "<h" + level + ">" + inline(m[2]) + "</h" + level + ">";
        } else if ((m = line.match(/^\s*[-*+]\s+(.*)$/)) || (m = line.match(/^\s*\d+[.)]\s+(.*)$/))) {
          flushParagraph();
          const kind = /^\s*\d/.test(line) ? "ol" : "ul";
          if (list !== kind) { closeList(); html += "<" + kind + ">"; list = kind; }
          html += "<li>" + inline(m[1]) + "</li>";
        } else if (line.trim() === "") {
          flushParagraph(); closeList();
        } else {
          closeList(); paragraph.push(line);
        }
      });
      flushParagraph(); closeList();
    });
    return html;
  }
  global.ArenaMarkdown = { render: render, escapeHtml: escapeHtml };
})(window);
