//! `GET /`: the one self-contained page (`page.html`): a streaming playground for completions
//! and chat, and the explorer, which draws the tree as `/v1/explore` streams it with the HTML
//! export's own style and drawing code, so both show a tree alike.

use crate::pages::explore::{STYLE, VIEW_SCRIPT};
use axum::response::Html;
use std::sync::LazyLock;

static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("page.html")
        .replace("/*STYLE*/", STYLE)
        .replace("/*VIEW*/", VIEW_SCRIPT)
});

pub async fn index() -> Html<&'static str> {
    Html(PAGE.as_str())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_whole_and_offline() {
        let page = super::PAGE.as_str();
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*VIEW*/"));
        assert!(page.contains("const everettView="));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
