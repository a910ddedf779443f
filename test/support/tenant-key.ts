/** The tenant key of every test run: the template holds it, and withTenant signs with it (SKILLS_DB_TENANT_KEY). */
export const TEST_TENANT_KEY = 'test:0123456789abcdef0123456789abcdef-test-only'

/** The audit key of every test run: recordAudit signs with it (SKILLS_DB_AUDIT_KEY), audit verify checks with it. */
export const TEST_AUDIT_KEY = 'audit:fedcba9876543210fedcba9876543210-test-only'
