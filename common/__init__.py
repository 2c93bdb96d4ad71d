"""The few pieces every app needs. Imports no app and nothing from the project package."""
