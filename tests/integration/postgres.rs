//! The PostgreSQL store with real servers: the harness itself, then (with
//! the backend) gateways sharing one database.

use crate::support::postgres::TestDatabase;

#[tokio::test]
async fn each_test_gets_a_database_of_its_own() {
    let Some(first) = TestDatabase::create().await else {
        return;
    };
    let Some(second) = TestDatabase::create().await else {
        return;
    };
    assert_ne!(first.name, second.name);
    let a = first.client().await;
    a.batch_execute("CREATE TABLE marker (x int)")
        .await
        .unwrap();
    let b = second.client().await;
    let seen = b
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'marker'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        seen.is_none(),
        "a table of one test database is visible in another"
    );
}
