// The language switch: a link in every page's header to the same page in the other edition.
// The English book is published at <root>/, the Chinese one at <root>/zh/, with the same
// paths below each (book/intro.html, notebooks/12_mini_gpt.html, ...).
document.addEventListener("DOMContentLoaded", () => {
  const chinese = document.documentElement.lang.toLowerCase().startsWith("zh");
  const root = new URL(document.documentElement.dataset.content_root || "./", window.location.href);
  const page = window.location.href.slice(root.href.length);     // e.g. notebooks/08_attention.html#3
  const target = new URL(chinese ? "../" + page : "zh/" + page, root);
  const link = document.createElement("a");
  link.href = target.href;
  link.className = "btn btn-sm language-switch";
  link.id = "language-switch";
  link.lang = chinese ? "en" : "zh-CN";
  link.hreflang = link.lang;
  link.title = chinese ? "Read this page in English" : "阅读本页的中文版";
  link.textContent = chinese ? "English" : "中文";
  const header = document.querySelector(".article-header-buttons");
  (header || document.body).prepend(link);
});
