//! Roles and the admin user listing.

use crate::backend_test;
use crate::support::app::PASSWORD;

backend_test! {
    async fn customer_calling_an_admin_route_is_403(app) {
        let token = app.customer_token().await;
        app.get("/api/v1/users", Some(&token)).await.assert_error(403, "forbidden");
        app.get("/api/v1/users", None).await.assert_error(401, "unauthorized");
    }
}

backend_test! {
    async fn bootstrap_admin_exists_and_has_the_admin_role(app) {
        let token = app.admin_token().await;
        let me = app.get("/api/v1/users/me", Some(&token)).await;
        me.assert_status(200);
        assert_eq!(me.body["role"], "admin");
    }
}

backend_test! {
    async fn admin_lists_users_page_by_page(app) {
        let admin = app.admin_token().await;
        for i in 0..4 {
            app.register(&format!("page-{i}@example.com"), PASSWORD, "Paged").await.assert_status(201);
        }
        let mut seen = Vec::new();
        let mut path = "/api/v1/users?limit=2".to_owned();
        loop {
            let page = app.get(&path, Some(&admin)).await;
            page.assert_status(200);
            let items = page.body["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|u| u["email"].as_str().unwrap().to_owned()));
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/users?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        // The admin plus four customers, each exactly once.
        assert_eq!(seen.len(), 5, "{seen:?}");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5);
    }
}

backend_test! {
    async fn bad_list_parameters_are_400_invalid_query(app) {
        let admin = app.admin_token().await;
        for path in ["/api/v1/users?limit=0", "/api/v1/users?limit=201", "/api/v1/users?limit=abc", "/api/v1/users?cursor=nope"] {
            app.get(path, Some(&admin)).await.assert_error(400, "invalid_query");
        }
    }
}
