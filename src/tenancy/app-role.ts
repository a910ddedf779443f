/** Session setting through which `migrateToLatest({ appRole })` names the application role to migrations. */
export const APP_ROLE_SETTING = 'skills_db.app_role'
export const DEFAULT_APP_ROLE = 'app_user'
